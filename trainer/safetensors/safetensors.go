package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Sentinel errors.
var (
	// ErrFormat is wrapped by every error about a malformed file.
	ErrFormat = errors.New("safetensors: malformed file")
	// ErrLimit is wrapped when a file is well formed but exceeds a Limits bound.
	ErrLimit = errors.New("safetensors: file exceeds a limit")
	// ErrTensor is wrapped by Encode when a tensor cannot be written as given.
	ErrTensor = errors.New("safetensors: bad tensor")
)

// F32 is the only dtype this package reads and writes.
const F32 = "F32"

// metadataKey is the header key reserved for string metadata.
const metadataKey = "__metadata__"

// knownDTypes are the dtypes of the format; all but F32 are recognised and refused as unsupported.
var knownDTypes = []string{"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"}

// Tensor is one named tensor. Data holds Shape's product of values in row-major order.
type Tensor struct {
	Name  string
	DType string // "F32"
	Shape []int
	Data  []float32
}

// File is a decoded safetensors file: its tensors in data-offset order, and its metadata (nil
// when the header has none).
type File struct {
	Tensors  []Tensor
	Metadata map[string]string
}

// Lookup returns the tensor named name.
func (f *File) Lookup(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Limits bounds what Decode accepts. The zero value means the defaults.
type Limits struct {
	// MaxHeader is the largest JSON header in bytes. Zero means 16 MiB.
	MaxHeader int
	// MaxTensors is the largest number of tensors. Zero means 65536.
	MaxTensors int
	// MaxRank is the largest number of dimensions of a tensor. Zero means 8.
	MaxRank int
}

const (
	defaultMaxHeader  = 16 << 20
	defaultMaxTensors = 1 << 16
	defaultMaxRank    = 8
)

func (l Limits) withDefaults() Limits {
	if l.MaxHeader == 0 {
		l.MaxHeader = defaultMaxHeader
	}
	if l.MaxTensors == 0 {
		l.MaxTensors = defaultMaxTensors
	}
	if l.MaxRank == 0 {
		l.MaxRank = defaultMaxRank
	}
	return l
}

// Validate reports whether l holds no negative bound.
func (l Limits) Validate() error {
	if l.MaxHeader < 0 || l.MaxTensors < 0 || l.MaxRank < 0 {
		return fmt.Errorf("safetensors: negative limit in %+v", l)
	}
	return nil
}

// elements is the product of shape, or an error if a dimension is negative or it overflows max.
func elements(shape []int, max uint64) (uint64, error) {
	n := uint64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is %d", i, d)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > max {
			return 0, fmt.Errorf("shape %v holds more than %d elements", shape, max)
		}
		n = lo
	}
	return n, nil
}

// Encode writes tensors (in the order given) and metadata as a safetensors file. It refuses a
// tensor whose dtype is not F32, whose data length is not its shape's product, a duplicate or
// empty name, the reserved name "__metadata__", and a tensor of more than 2³¹−1 elements.
func Encode(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			h.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		sep()
		h.WriteString(`"` + metadataKey + `":{`)
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			if !utf8.ValidString(k) || !utf8.ValidString(metadata[k]) {
				return nil, fmt.Errorf("%w: metadata %q is not valid UTF-8", ErrTensor, k)
			}
			writeString(&h, k)
			h.WriteByte(':')
			writeString(&h, metadata[k])
		}
		h.WriteByte('}')
	}
	seen := make(map[string]bool, len(tensors))
	var off uint64
	for i, t := range tensors {
		switch {
		case t.Name == "" || t.Name == metadataKey || !utf8.ValidString(t.Name):
			return nil, fmt.Errorf("%w: tensor %d has name %q", ErrTensor, i, t.Name)
		case seen[t.Name]:
			return nil, fmt.Errorf("%w: duplicate name %q", ErrTensor, t.Name)
		case t.DType != F32:
			return nil, fmt.Errorf("%w: %q has dtype %q, want %q", ErrTensor, t.Name, t.DType, F32)
		}
		seen[t.Name] = true
		n, err := elements(t.Shape, math.MaxInt32)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrTensor, t.Name, err)
		}
		if n != uint64(len(t.Data)) {
			return nil, fmt.Errorf("%w: %q has %d values for shape %v", ErrTensor, t.Name, len(t.Data), t.Shape)
		}
		sep()
		writeString(&h, t.Name)
		h.WriteString(`:{"dtype":"F32","shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
		}
		end := off + 4*n
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	out := make([]byte, 0, 8+h.Len()+int(off))
	out = binary.LittleEndian.AppendUint64(out, uint64(h.Len()))
	out = append(out, h.Bytes()...)
	for _, t := range tensors {
		for _, x := range t.Data {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
		}
	}
	return out, nil
}

// writeString writes s as a JSON string without HTML escaping.
func writeString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	b.Truncate(b.Len() - 1) // Encode's newline
}

// entry is one tensor's header record.
type entry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// Decode parses and checks a safetensors file. See the package comment for what it refuses.
func Decode(b []byte, lim Limits) (*File, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	lim = lim.withDefaults()
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the 8-byte header length", ErrFormat, len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("%w: header of %d bytes in a file of %d", ErrFormat, n, len(b))
	}
	if n > uint64(lim.MaxHeader) {
		return nil, fmt.Errorf("%w: header of %d bytes, limit %d", ErrLimit, n, lim.MaxHeader)
	}
	header, data := b[8:8+n], b[8+n:]
	if len(header) == 0 || header[0] != '{' {
		return nil, fmt.Errorf("%w: header does not start with '{'", ErrFormat)
	}
	if !utf8.Valid(header) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrFormat)
	}
	f := &File{}
	type item struct {
		name string
		e    entry
	}
	var items []item
	seen := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '{', checked above
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: header key %v is not a string", ErrFormat, tok)
		}
		if name == "" {
			return nil, fmt.Errorf("%w: a tensor has an empty name", ErrFormat)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: duplicate name %q", ErrFormat, name)
		}
		seen[name] = true
		if name == metadataKey {
			var md map[string]string
			if err := decodeStrict(dec, &md); err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrFormat, metadataKey, err)
			}
			f.Metadata = md
			continue
		}
		if len(items) >= lim.MaxTensors {
			return nil, fmt.Errorf("%w: more than %d tensors", ErrLimit, lim.MaxTensors)
		}
		var e entry
		if err := decodeStrict(dec, &e); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrFormat, name, err)
		}
		items = append(items, item{name, e})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: bytes after the header's JSON object (other than space padding)", ErrFormat)
	}
	// Check every entry, then that the ranges tile the data exactly.
	for _, it := range items {
		e := it.e
		if !slices.Contains(knownDTypes, e.DType) {
			return nil, fmt.Errorf("%w: tensor %q: unknown dtype %q", ErrFormat, it.name, e.DType)
		}
		if e.DType != F32 {
			return nil, fmt.Errorf("%w: tensor %q: dtype %s is not supported (only F32)", ErrFormat, it.name, e.DType)
		}
		if e.Shape == nil {
			return nil, fmt.Errorf("%w: tensor %q has no shape", ErrFormat, it.name)
		}
		if len(e.Shape) > lim.MaxRank {
			return nil, fmt.Errorf("%w: tensor %q has %d dimensions, limit %d", ErrLimit, it.name, len(e.Shape), lim.MaxRank)
		}
		if len(e.DataOffsets) != 2 {
			return nil, fmt.Errorf("%w: tensor %q has %d data offsets, want 2", ErrFormat, it.name, len(e.DataOffsets))
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin > end || end > uint64(len(data)) {
			return nil, fmt.Errorf("%w: tensor %q: data offsets [%d, %d] outside the %d data bytes", ErrFormat, it.name, begin, end, len(data))
		}
		count, err := elements(e.Shape, uint64(len(data)))
		if err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrFormat, it.name, err)
		}
		if 4*count != end-begin {
			return nil, fmt.Errorf("%w: tensor %q: shape %v of %s is %d bytes, data offsets give %d", ErrFormat, it.name, e.Shape, e.DType, 4*count, end-begin)
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := compareU64(a.e.DataOffsets[0], b.e.DataOffsets[0]); c != 0 {
			return c
		}
		return compareU64(a.e.DataOffsets[1], b.e.DataOffsets[1])
	})
	var at uint64
	for _, it := range items {
		begin, end := it.e.DataOffsets[0], it.e.DataOffsets[1]
		if begin < at {
			return nil, fmt.Errorf("%w: tensor %q at [%d, %d] overlaps the tensor before it (ending at %d)", ErrFormat, it.name, begin, end, at)
		}
		if begin > at {
			return nil, fmt.Errorf("%w: tensor %q starts at %d, leaving a hole after byte %d", ErrFormat, it.name, begin, at)
		}
		at = end
	}
	if at != uint64(len(data)) {
		return nil, fmt.Errorf("%w: tensors cover %d of the %d data bytes", ErrFormat, at, len(data))
	}
	f.Tensors = make([]Tensor, len(items))
	for i, it := range items {
		raw := data[it.e.DataOffsets[0]:it.e.DataOffsets[1]]
		v := make([]float32, len(raw)/4)
		for j := range v {
			v[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
		}
		f.Tensors[i] = Tensor{Name: it.name, DType: it.e.DType, Shape: it.e.Shape, Data: v}
	}
	return f, nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decodeStrict decodes the next JSON value into v, refusing unknown fields.
func decodeStrict(dec *json.Decoder, v any) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if string(raw) == "null" {
		return errors.New("null")
	}
	return nil
}
