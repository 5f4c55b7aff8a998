package export

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/safetensors"
)

// Sentinel errors.
var (
	// ErrSpec is wrapped when a model spec is malformed or of a kind that cannot be exported.
	ErrSpec = errors.New("export: unsupported model spec")
	// ErrLayout is wrapped when a layout or parameter vector does not match its spec.
	ErrLayout = errors.New("export: layout does not match the model")
	// ErrStateDict is wrapped when a file's tensors are not exactly the model's state dict.
	ErrStateDict = errors.New("export: state dict does not match the model")
	// ErrProvenance is wrapped when a file's provenance metadata is missing or malformed.
	ErrProvenance = errors.New("export: bad provenance")
)

// Kind is the kind of model a layout describes.
type Kind int

// Kinds.
const (
	KindUnknown Kind = iota
	KindMLP
	KindGPT
)

func (k Kind) String() string {
	switch k {
	case KindMLP:
		return "mlp"
	case KindGPT:
		return "gpt"
	}
	return "unknown"
}

// GPTVocab is the GPT's vocabulary unless its spec names another ("-v<Vocab>"): bytes.
const GPTVocab = 256

// KindOf tells the kind of model from its layout's names.
func KindOf(l nn.Layout) Kind {
	if len(l) == 0 {
		return KindUnknown
	}
	switch l[0].Name {
	case "fc0.w":
		return KindMLP
	case "transformer.wte.weight":
		return KindGPT
	}
	return KindUnknown
}

// parseGPT parses "gpt:L-D-NH-T" or "gpt:L-D-NH-T-v<Vocab>" (nn.ParseGPTName), Vocab 0 meaning 256.
func parseGPT(spec string) (nn.GPTConfig, error) {
	c, err := nn.ParseGPTName(spec)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	if c.Vocab == 0 {
		c.Vocab = GPTVocab
	}
	return c, nil
}

// builder appends contiguous tensors to a layout.
type builder struct {
	l   nn.Layout
	off int
}

func (b *builder) add(name string, shape ...int) {
	t := nn.Tensor{Name: name, Shape: shape, Offset: b.off}
	b.l = append(b.l, t)
	b.off += t.Size()
}

// LayoutFor returns the layout a model of spec has ("mlp:..." or "gpt:...").
func LayoutFor(spec string) (nn.Layout, error) {
	var b builder
	switch {
	case strings.HasPrefix(spec, "mlp:"):
		sizes, err := nn.ParseMLPName(spec)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpec, err)
		}
		for i := 0; i+1 < len(sizes); i++ {
			b.add(fmt.Sprintf("fc%d.w", i), sizes[i], sizes[i+1])
			b.add(fmt.Sprintf("fc%d.b", i), sizes[i+1])
		}
	case strings.HasPrefix(spec, "gpt:"):
		g, err := parseGPT(spec)
		if err != nil {
			return nil, err
		}
		D := g.Embed
		b.add("transformer.wte.weight", g.Vocab, D)
		b.add("transformer.wpe.weight", g.Context, D)
		for i := range g.Layers {
			p := fmt.Sprintf("transformer.h.%d.", i)
			b.add(p+"ln_1.weight", D)
			b.add(p+"ln_1.bias", D)
			b.add(p+"attn.c_attn.weight", D, 3*D)
			b.add(p+"attn.c_attn.bias", 3*D)
			b.add(p+"attn.c_proj.weight", D, D)
			b.add(p+"attn.c_proj.bias", D)
			b.add(p+"ln_2.weight", D)
			b.add(p+"ln_2.bias", D)
			b.add(p+"mlp.c_fc.weight", D, 4*D)
			b.add(p+"mlp.c_fc.bias", 4*D)
			b.add(p+"mlp.c_proj.weight", 4*D, D)
			b.add(p+"mlp.c_proj.bias", D)
		}
		b.add("transformer.ln_f.weight", D)
		b.add("transformer.ln_f.bias", D)
	default:
		return nil, fmt.Errorf("%w: %q: only mlp:<sizes> and gpt:L-D-NH-T are exported", ErrSpec, spec)
	}
	return b.l, nil
}

// sizeOf returns the number of state-dict tensors and of parameters of spec, without building
// its layout (the parameter count saturates at math.MaxUint64).
func sizeOf(spec string) (tensors int, params uint64, err error) {
	mul := func(a, b uint64) uint64 {
		hi, lo := bits.Mul64(a, b)
		if hi != 0 {
			return math.MaxUint64
		}
		return lo
	}
	add := func(a, b uint64) uint64 {
		s, c := bits.Add64(a, b, 0)
		if c != 0 {
			return math.MaxUint64
		}
		return s
	}
	switch {
	case strings.HasPrefix(spec, "mlp:"):
		sizes, err := nn.ParseMLPName(spec)
		if err != nil {
			return 0, 0, fmt.Errorf("%w: %w", ErrSpec, err)
		}
		for i := 0; i+1 < len(sizes); i++ {
			in, out := uint64(sizes[i]), uint64(sizes[i+1])
			params = add(params, mul(add(in, 1), out))
		}
		return 2 * (len(sizes) - 1), params, nil
	case strings.HasPrefix(spec, "gpt:"):
		g, err := parseGPT(spec)
		if err != nil {
			return 0, 0, err
		}
		D, L, V := uint64(g.Embed), uint64(g.Layers), uint64(g.Vocab)
		perLayer := 12*D*D + 13*D // ln 4D, c_attn 3D²+3D, c_proj D²+D, c_fc 4D²+4D, mlp.c_proj 4D²+D
		params = add(add(mul(V+uint64(g.Context), D), mul(L, perLayer)), 2*D)
		return 12*g.Layers + 5, add(params, mul(V, D)), nil // + lm_head
	}
	return 0, 0, fmt.Errorf("%w: %q: only mlp:<sizes> and gpt:L-D-NH-T are exported", ErrSpec, spec)
}

// torchName returns the PyTorch name of a layout tensor and whether its data is transposed.
func torchName(k Kind, t nn.Tensor) (string, bool) {
	if k == KindMLP {
		// "fc{i}.w" / "fc{i}.b"; LayoutFor has checked the names.
		rest := strings.TrimPrefix(t.Name, "fc")
		idx, suffix, _ := strings.Cut(rest, ".")
		i, _ := strconv.Atoi(idx)
		if suffix == "w" {
			return fmt.Sprintf("%d.weight", 2*i), true
		}
		return fmt.Sprintf("%d.bias", 2*i), false
	}
	linear := strings.HasSuffix(t.Name, ".c_attn.weight") || strings.HasSuffix(t.Name, ".c_proj.weight") || strings.HasSuffix(t.Name, ".c_fc.weight")
	return t.Name, linear && len(t.Shape) == 2
}

// transpose returns the [cols, rows] transpose of the row-major [rows, cols] matrix m.
func transpose(m []float32, rows, cols int) []float32 {
	out := make([]float32, len(m))
	for r := range rows {
		for c := range cols {
			out[c*rows+r] = m[r*cols+c]
		}
	}
	return out
}

// checkLayout reports whether l is exactly the layout of spec.
func checkLayout(spec string, l nn.Layout) error {
	want, err := LayoutFor(spec)
	if err != nil {
		return err
	}
	if len(l) != len(want) {
		return fmt.Errorf("%w: %d tensors, %s has %d", ErrLayout, len(l), spec, len(want))
	}
	for i := range l {
		if l[i].Name != want[i].Name || !slices.Equal(l[i].Shape, want[i].Shape) || l[i].Offset != want[i].Offset {
			return fmt.Errorf("%w: tensor %d is %s %v at %d, %s has %s %v at %d", ErrLayout, i, l[i].Name, l[i].Shape, l[i].Offset, spec, want[i].Name, want[i].Shape, want[i].Offset)
		}
	}
	return nil
}

// ToTorch maps θ, laid out as l (which must be spec's layout), to PyTorch state-dict tensors.
func ToTorch(spec string, l nn.Layout, theta []float32) ([]safetensors.Tensor, error) {
	if err := checkLayout(spec, l); err != nil {
		return nil, err
	}
	k := KindOf(l)
	if k.String() != spec[:strings.IndexByte(spec, ':')] {
		return nil, fmt.Errorf("%w: the layout is a %s's, the spec %q", ErrLayout, k, spec)
	}
	if len(theta) != l.Size() {
		return nil, fmt.Errorf("%w: %d parameters, %s has %d", ErrLayout, len(theta), spec, l.Size())
	}
	out := make([]safetensors.Tensor, 0, len(l)+1)
	for _, t := range l {
		name, tr := torchName(k, t)
		data := slices.Clone(theta[t.Offset : t.Offset+t.Size()])
		shape := slices.Clone(t.Shape)
		if tr {
			data = transpose(data, t.Shape[0], t.Shape[1])
			shape = []int{t.Shape[1], t.Shape[0]}
		}
		out = append(out, safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: shape, Data: data})
	}
	if k == KindGPT {
		wte := out[0]
		out = append(out, safetensors.Tensor{Name: "lm_head.weight", DType: safetensors.F32, Shape: slices.Clone(wte.Shape), Data: slices.Clone(wte.Data)})
	}
	return out, nil
}

// FromTorch is ToTorch's inverse, strict: tensors must be exactly spec's state dict (any order).
// It returns spec's layout and θ.
func FromTorch(spec string, tensors []safetensors.Tensor) (nn.Layout, []float32, error) {
	// The spec may come from an untrusted file: check its size against the tensors given before
	// building its layout, so a small file cannot make us allocate a huge model.
	var have uint64
	for _, t := range tensors {
		have += uint64(len(t.Data))
	}
	count, params, err := sizeOf(spec)
	if err != nil {
		return nil, nil, err
	}
	if count != len(tensors) || params > have {
		return nil, nil, fmt.Errorf("%w: %d tensors of %d values, %s has %d tensors of %d", ErrStateDict, len(tensors), have, spec, count, params)
	}
	l, err := LayoutFor(spec)
	if err != nil {
		return nil, nil, err
	}
	k := KindOf(l)
	byName := make(map[string]safetensors.Tensor, len(tensors))
	for _, t := range tensors {
		if _, dup := byName[t.Name]; dup {
			return nil, nil, fmt.Errorf("%w: duplicate tensor %q", ErrStateDict, t.Name)
		}
		byName[t.Name] = t
	}
	want := len(l)
	if k == KindGPT {
		want++
	}
	theta := make([]float32, l.Size())
	used := 0
	for _, lt := range l {
		name, tr := torchName(k, lt)
		shape := lt.Shape
		if tr {
			shape = []int{lt.Shape[1], lt.Shape[0]}
		}
		t, ok := byName[name]
		if !ok {
			return nil, nil, fmt.Errorf("%w: missing %q (%s)", ErrStateDict, name, spec)
		}
		if !slices.Equal(t.Shape, shape) || len(t.Data) != lt.Size() {
			return nil, nil, fmt.Errorf("%w: %q has shape %v, %s needs %v", ErrStateDict, name, t.Shape, spec, shape)
		}
		data := t.Data
		if tr {
			data = transpose(data, shape[0], shape[1])
		}
		for i, x := range data {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, nil, fmt.Errorf("%w: %q value %d is %v", ErrStateDict, name, i, x)
			}
		}
		copy(theta[lt.Offset:], data)
		used++
	}
	if k == KindGPT {
		head, ok := byName["lm_head.weight"]
		if !ok {
			return nil, nil, fmt.Errorf("%w: missing %q (%s)", ErrStateDict, "lm_head.weight", spec)
		}
		wte := byName["transformer.wte.weight"]
		if !slices.Equal(head.Shape, wte.Shape) || !bitsEqual(head.Data, wte.Data) {
			return nil, nil, fmt.Errorf("%w: lm_head.weight differs from transformer.wte.weight, to which it is tied", ErrStateDict)
		}
		used++
	}
	if used != len(byName) || len(byName) != want {
		var extra []string
		for n := range byName {
			if !expected(k, l, n) {
				extra = append(extra, n)
			}
		}
		slices.Sort(extra)
		return nil, nil, fmt.Errorf("%w: unexpected tensors %q (%s)", ErrStateDict, extra, spec)
	}
	return l, theta, nil
}

func expected(k Kind, l nn.Layout, name string) bool {
	if k == KindGPT && name == "lm_head.weight" {
		return true
	}
	for _, t := range l {
		if n, _ := torchName(k, t); n == name {
			return true
		}
	}
	return false
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// Provenance says which model a file holds. Its JSON form is the provenance file written beside
// an export.
type Provenance struct {
	Spec      string `json:"spec"`
	Cohort    uint64 `json:"cohort"`
	Round     uint32 `json:"round"`
	ModelHash []byte `json:"-"` // the protocol model hash of θ
}

type provenanceJSON struct {
	Spec      string `json:"spec"`
	Cohort    uint64 `json:"cohort"`
	Round     uint32 `json:"round"`
	ModelHash string `json:"model_hash"`
}

// MarshalJSON writes the hash as hex.
func (p Provenance) MarshalJSON() ([]byte, error) {
	return json.Marshal(provenanceJSON{p.Spec, p.Cohort, p.Round, hex.EncodeToString(p.ModelHash)})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (p *Provenance) UnmarshalJSON(b []byte) error {
	var j provenanceJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: %w", ErrProvenance, err)
	}
	h, err := hex.DecodeString(j.ModelHash)
	if err != nil {
		return fmt.Errorf("%w: model_hash: %w", ErrProvenance, err)
	}
	*p = Provenance{Spec: j.Spec, Cohort: j.Cohort, Round: j.Round, ModelHash: h}
	return nil
}

// Metadata keys.
const (
	KeySpec      = "cohort.spec"
	KeyCohort    = "cohort.cohort"
	KeyRound     = "cohort.round"
	KeyModelHash = "cohort.model_hash"
)

// Metadata returns p as safetensors metadata, with "format": "pt" as torch's writers set it.
func (p Provenance) Metadata() map[string]string {
	return map[string]string{
		"format":     "pt",
		KeySpec:      p.Spec,
		KeyCohort:    strconv.FormatUint(p.Cohort, 10),
		KeyRound:     strconv.FormatUint(uint64(p.Round), 10),
		KeyModelHash: hex.EncodeToString(p.ModelHash),
	}
}

// ProvenanceFrom reads the provenance from safetensors metadata.
func ProvenanceFrom(md map[string]string) (Provenance, error) {
	var p Provenance
	for _, k := range []string{KeySpec, KeyCohort, KeyRound, KeyModelHash} {
		if _, ok := md[k]; !ok {
			return p, fmt.Errorf("%w: metadata has no %q", ErrProvenance, k)
		}
	}
	p.Spec = md[KeySpec]
	c, err := strconv.ParseUint(md[KeyCohort], 10, 64)
	if err != nil {
		return p, fmt.Errorf("%w: %s: %w", ErrProvenance, KeyCohort, err)
	}
	r, err := strconv.ParseUint(md[KeyRound], 10, 32)
	if err != nil {
		return p, fmt.Errorf("%w: %s: %w", ErrProvenance, KeyRound, err)
	}
	h, err := hex.DecodeString(md[KeyModelHash])
	if err != nil {
		return p, fmt.Errorf("%w: %s: %w", ErrProvenance, KeyModelHash, err)
	}
	p.Cohort, p.Round, p.ModelHash = c, uint32(r), h
	return p, nil
}

// Export encodes θ (laid out as l, the layout of p.Spec) as a safetensors file of PyTorch
// state-dict tensors with p in its metadata. Same inputs ⇒ identical bytes.
func Export(p Provenance, l nn.Layout, theta []float32) ([]byte, error) {
	ts, err := ToTorch(p.Spec, l, theta)
	if err != nil {
		return nil, err
	}
	return safetensors.Encode(ts, p.Metadata())
}

// Import decodes a file Export wrote (or any safetensors file holding exactly a Cohort model's
// state dict and its provenance metadata) and returns the provenance, layout and θ.
func Import(b []byte, lim safetensors.Limits) (Provenance, nn.Layout, []float32, error) {
	f, err := safetensors.Decode(b, lim)
	if err != nil {
		return Provenance{}, nil, nil, err
	}
	p, err := ProvenanceFrom(f.Metadata)
	if err != nil {
		return Provenance{}, nil, nil, err
	}
	l, theta, err := FromTorch(p.Spec, f.Tensors)
	if err != nil {
		return Provenance{}, nil, nil, err
	}
	return p, l, theta, nil
}
