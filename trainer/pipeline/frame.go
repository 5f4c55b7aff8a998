package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cohortlab/cohort/compress"
)

// Sentinel errors. Errors returned by this package wrap one of them (or the error of a link,
// a model or the optimizer).
var (
	// ErrConfig reports an invalid stage, schedule or codec configuration.
	ErrConfig = errors.New("pipeline: invalid config")
	// ErrFrame reports a frame that does not decode: too short, an unknown kind, a payload of the
	// wrong size or a tensor message that fails to decode.
	ErrFrame = errors.New("pipeline: malformed frame")
	// ErrProtocol reports a well-formed frame the schedule did not expect: another kind, step or
	// micro-batch than the one due from that stage.
	ErrProtocol = errors.New("pipeline: unexpected frame")
	// ErrBatch reports a step's batch of the wrong length for the stage.
	ErrBatch = errors.New("pipeline: invalid batch")
)

// Kind is what a frame carries.
type Kind uint8

// Frame kinds.
const (
	// Activation is a micro-batch's output of stage s, to stage s+1 (the forward direction).
	Activation Kind = iota + 1
	// Gradient is the gradient of a micro-batch's input of stage s, to stage s−1 (backward).
	Gradient
	// Tie is a step's gradient of the tied wte, between the first and the last stage.
	Tie
	// NormPartial carries the sum of squared gradients of stages 0..s, to stage s+1.
	NormPartial
	// NormTotal carries the group's sum of squared gradients and the step's summed loss, from the
	// last stage around to the first and on to the middle ones.
	NormTotal
	// Theta is θ_{t+1} of the tied wte after round t's outer step (Step: t), from the first stage
	// to the last, whose copy takes it: stages in processes of their own (RunProcess).
	Theta
	// Hash carries the SHA-256 state of the model hash over the ranges of stages 0..s (Step: the
	// round), to stage s+1; the last finishes the whole model's hash.
	Hash
	// Eval is a chunk of validation sequences' activations, stage s to s+1 (Step: the round;
	// Micro: the chunk's sequences, 0 for the empty frame that ends the round's validation).
	Eval
	// Control carries a resume round and the settings' digest along the group before training
	// (Micro: 0 on the way 0 → S−1, 1 for the agreed round on the way back).
	Control
	numKinds
)

var kindNames = [numKinds]string{"", "activation", "gradient", "tie", "norm-partial", "norm-total", "theta", "hash", "eval", "control"}

// Payload sizes of the fixed and bounded frames.
const (
	// controlPayloadLen is a Control frame's round (uint32), settings digest and the first
	// stage's data digest (32 bytes each).
	controlPayloadLen = 4 + 32 + 32
	// maxHashPayload bounds a Hash frame's marshalled SHA-256 state (108 bytes in Go).
	maxHashPayload = 256
)

func (k Kind) String() string {
	if k > 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Frame is one message between two stages of a group.
//
// Wire form (little-endian): kind (1 byte), 3 zero bytes, step (uint32), micro-batch (uint32),
// then the payload: a compress message of the tensor (Activation, Gradient, Tie) or two float64
// (the sum of squares and the summed loss: NormPartial, NormTotal).
type Frame struct {
	Kind    Kind
	Step    uint32
	Micro   uint32
	Payload []byte
}

// FrameHeaderLen is the size of a frame's fixed header.
const FrameHeaderLen = 12

// normPayloadLen is the payload of the norm frames.
const normPayloadLen = 16

// Size is the frame's length on the wire.
func (f Frame) Size() int { return FrameHeaderLen + len(f.Payload) }

// AppendBinary appends the frame's wire form to dst.
func (f Frame) AppendBinary(dst []byte) []byte {
	dst = append(dst, byte(f.Kind), 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, f.Step)
	dst = binary.LittleEndian.AppendUint32(dst, f.Micro)
	return append(dst, f.Payload...)
}

// ParseFrame reads a frame's wire form; the payload aliases b. It checks the header and the
// kind, not the payload (see Codecs.Decode).
func ParseFrame(b []byte) (Frame, error) {
	if len(b) < FrameHeaderLen {
		return Frame{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrFrame, len(b), FrameHeaderLen)
	}
	k := Kind(b[0])
	if k == 0 || k >= numKinds {
		return Frame{}, fmt.Errorf("%w: unknown kind %d", ErrFrame, b[0])
	}
	if b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return Frame{}, fmt.Errorf("%w: reserved header bytes % x are not zero", ErrFrame, b[1:4])
	}
	f := Frame{Kind: k, Step: binary.LittleEndian.Uint32(b[4:]), Micro: binary.LittleEndian.Uint32(b[8:]), Payload: b[FrameHeaderLen:]}
	switch {
	case (k == NormPartial || k == NormTotal) && len(f.Payload) != normPayloadLen:
		return Frame{}, fmt.Errorf("%w: %v payload of %d bytes, want %d", ErrFrame, k, len(f.Payload), normPayloadLen)
	case k == Control && len(f.Payload) != controlPayloadLen:
		return Frame{}, fmt.Errorf("%w: %v payload of %d bytes, want %d", ErrFrame, k, len(f.Payload), controlPayloadLen)
	case k == Hash && (len(f.Payload) == 0 || len(f.Payload) > maxHashPayload):
		return Frame{}, fmt.Errorf("%w: %v payload of %d bytes, want 1 to %d", ErrFrame, k, len(f.Payload), maxHashPayload)
	case k == Eval && f.Micro == 0 && len(f.Payload) != 0:
		return Frame{}, fmt.Errorf("%w: the end of a validation carries %d bytes, want none", ErrFrame, len(f.Payload))
	}
	return f, nil
}

func normPayload(sumSquares, loss float64) []byte {
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, normPayloadLen), math.Float64bits(sumSquares))
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(loss))
}

func parseNorm(f Frame) (sumSquares, loss float64, err error) {
	if len(f.Payload) != normPayloadLen {
		return 0, 0, fmt.Errorf("%w: %v payload of %d bytes, want %d", ErrFrame, f.Kind, len(f.Payload), normPayloadLen)
	}
	sumSquares = math.Float64frombits(binary.LittleEndian.Uint64(f.Payload))
	loss = math.Float64frombits(binary.LittleEndian.Uint64(f.Payload[8:]))
	if !(sumSquares >= 0) || math.IsInf(sumSquares, 0) || math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, 0, fmt.Errorf("%w: %v carries sum of squares %v and loss %v", ErrFrame, f.Kind, sumSquares, loss)
	}
	return sumSquares, loss, nil
}

// Codecs code the tensors that cross between stages: activations and their gradients with the
// group's setting (rows of D values: a quantized setting gets one scale per row), the tied wte's
// gradient always as fp32 (the two copies must add the same bits).
type Codecs struct {
	act, tie                 *compress.Codec
	actLen, tieLen           int
	actSetting               compress.Setting
	maxActBytes, maxTieBytes int
	// eval codes validation activations, always fp32, up to evalLen values (0: none).
	eval         *compress.Codec
	evalLen, row int
	maxEvalBytes int
}

// NewCodecs returns the codecs for activations of actLen values in rows of row values, and a tied
// tensor of tieLen values. setting must be dense ("fp32", "fp16", "bf16", "q8", "q4", optionally
// "+zstd"); a quantized setting's block is set to the row length (one scale per row) when that is
// a multiple of 8, as the codec needs, and is the setting's own otherwise.
func NewCodecs(setting compress.Setting, actLen, row, tieLen int) (*Codecs, error) {
	if setting.Sparsifier != compress.Dense {
		return nil, fmt.Errorf("%w: activation codec %s: only dense settings code activations", ErrConfig, setting)
	}
	if actLen <= 0 || row <= 0 || actLen%row != 0 || tieLen < 0 {
		return nil, fmt.Errorf("%w: activation of %d values in rows of %d, tie of %d", ErrConfig, actLen, row, tieLen)
	}
	switch setting.Format {
	case compress.Q8, compress.Q4, compress.Q2, compress.Q1:
		if row%8 == 0 && row <= 1<<16 {
			setting.Block = row
		}
	}
	act, err := compress.New(compress.Config{Setting: setting, MaxElements: actLen})
	if err != nil {
		return nil, fmt.Errorf("%w: activation codec: %w", ErrConfig, err)
	}
	c := &Codecs{act: act, actLen: actLen, tieLen: tieLen, actSetting: setting, maxActBytes: act.MaxEncodedLen(actLen), row: row}
	if tieLen > 0 {
		if c.tie, err = compress.New(compress.Config{MaxElements: tieLen}); err != nil {
			return nil, fmt.Errorf("%w: tie codec: %w", ErrConfig, err)
		}
		c.maxTieBytes = c.tie.MaxEncodedLen(tieLen)
	}
	return c, nil
}

// EnableEval lets the codecs carry validation activations of up to n values (Eval frames),
// always fp32: the validation loss is the whole model's, whatever codes the training
// activations.
func (c *Codecs) EnableEval(n int) error {
	if n <= 0 || n%c.row != 0 {
		return fmt.Errorf("%w: validation activations of %d values in rows of %d", ErrConfig, n, c.row)
	}
	ev, err := compress.New(compress.Config{MaxElements: n})
	if err != nil {
		return fmt.Errorf("%w: eval codec: %w", ErrConfig, err)
	}
	c.eval, c.evalLen, c.maxEvalBytes = ev, n, ev.MaxEncodedLen(n)
	return nil
}

// EncodeEval codes a chunk of validation activations (a multiple of the row, at most the
// length EnableEval allowed) as an Eval frame's payload.
func (c *Codecs) EncodeEval(dst []byte, x []float32) ([]byte, error) {
	if c.eval == nil || len(x) == 0 || len(x) > c.evalLen || len(x)%c.row != 0 {
		return dst, fmt.Errorf("%w: validation activations of %d values (at most %d, rows of %d)", ErrConfig, len(x), c.evalLen, c.row)
	}
	out, err := c.eval.Encode(dst, x)
	if err != nil {
		return dst, fmt.Errorf("pipeline: encode %v: %w", Eval, err)
	}
	return out, nil
}

// DecodeEval decodes an Eval frame's payload into dst, which must be the chunk's length (the
// frame's sequences × T·D); another length is an error wrapping ErrFrame.
func (c *Codecs) DecodeEval(dst []float32, f Frame) error {
	if c.eval == nil || f.Kind != Eval || len(dst) == 0 || len(dst) > c.evalLen {
		return fmt.Errorf("%w: %v frame of %d values here (validation chunks of at most %d)", ErrFrame, f.Kind, len(dst), c.evalLen)
	}
	out, err := c.eval.Decode(dst[:0], f.Payload)
	if err != nil {
		return fmt.Errorf("%w: %v: %w", ErrFrame, f.Kind, err)
	}
	if len(out) != len(dst) {
		return fmt.Errorf("%w: %v of %d values, want %d", ErrFrame, f.Kind, len(out), len(dst))
	}
	return nil
}

// Setting is the activations' setting, with the block the codec uses.
func (c *Codecs) Setting() compress.Setting { return c.actSetting }

// MaxFrame is the largest frame a stage of this shape sends or accepts: the bound a link puts on
// what a peer may send.
func (c *Codecs) MaxFrame() int {
	return FrameHeaderLen + max(c.maxActBytes, c.maxTieBytes, c.maxEvalBytes, normPayloadLen, controlPayloadLen, maxHashPayload)
}

// Encode codes x as the payload of a frame of kind k (Activation, Gradient, Tie or Theta).
func (c *Codecs) Encode(dst []byte, k Kind, x []float32) ([]byte, error) {
	codec, n, err := c.codecOf(k)
	if err != nil {
		return dst, err
	}
	if len(x) != n {
		return dst, fmt.Errorf("%w: %v of %d values, want %d", ErrConfig, k, len(x), n)
	}
	out, err := codec.Encode(dst, x)
	if err != nil {
		return dst, fmt.Errorf("pipeline: encode %v: %w", k, err)
	}
	return out, nil
}

// Decode decodes the payload of f (Activation, Gradient, Tie or Theta) into dst, which must have the
// tensor's length. A payload that is not a message of the expected setting and length is an
// error wrapping ErrFrame.
func (c *Codecs) Decode(dst []float32, f Frame) error {
	codec, n, err := c.codecOf(f.Kind)
	if err != nil {
		return err
	}
	if len(dst) != n {
		return fmt.Errorf("%w: decoding %v into %d values, want %d", ErrConfig, f.Kind, len(dst), n)
	}
	out, err := codec.Decode(dst[:0], f.Payload)
	if err != nil {
		return fmt.Errorf("%w: %v: %w", ErrFrame, f.Kind, err)
	}
	if len(out) != n {
		return fmt.Errorf("%w: %v of %d values, want %d", ErrFrame, f.Kind, len(out), n)
	}
	return nil
}

func (c *Codecs) codecOf(k Kind) (*compress.Codec, int, error) {
	switch k {
	case Activation, Gradient:
		return c.act, c.actLen, nil
	case Tie, Theta:
		if c.tie != nil {
			return c.tie, c.tieLen, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: no tensor codec for %v frames here", ErrFrame, k)
}
