// Package protocol defines the messages members, peers and coordinators exchange over QUIC
// (package transport): the client API (api.go: MsgSubmit with a signed consensus envelope,
// MsgQuery with a Query, the Status a coordinator reports), the data-plane messages of a training
// round, the model hash every replica agrees on and the model blob a late joiner fetches
// (model.go), and the wire error codes of both (errors.go).
//
// A round of cohort C, number t:
//
//	peer → aggregator of slice s   MsgUpload      Upload header; payload = compress message of the
//	                                              peer's error-fed update for slice s, in the
//	                                              cohort's codec
//	peer → aggregator of slice s   MsgExchange    the two above on one stream: an Upload, answered
//	                                              once the slice's aggregate is ready (at most
//	                                              AggregateWait) with it, as MsgAggregate would, or
//	                                              with no body (accepted, not ready: ask with
//	                                              MsgAggregate)
//	peer → aggregator of slice s   MsgAggregate   long-polls until the slice's aggregate is ready;
//	                                              reply payload = the aggregate Δ[s] coded with
//	                                              DownCodec(codec), which every receiver decodes
//	                                              to the same floats
//	coordinator → aggregator       MsgAggregate   the same: every coordinator keeps a full replica
//	                                              of θ and the outer momentum
//	peer → any coordinator         MsgModel       where to fetch θ_t and the outer momentum (a
//	                                              blob of hashed chunks: late join, re-sync)
//
// Slices cut the flat parameter vector on ChunkLen boundaries (Slices); uploads close at
// UploadDeadline, 3/4 of the way from a round's opening to its deadline. The model hash is a hash
// of chunk hashes (ChunkLen parameters per chunk), so aggregators that hold different slices and
// peers that hold the whole vector compute the same value.
//
// A handler's refusal wraps one of the sentinel errors (ErrLate, ErrDuplicate, ErrNotAggregator,
// ErrForbidden, ErrUnavailable, ...): the reply carries its wire code, and the caller matches it
// with errors.Is, never by its text.
package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Message types.
const (
	MsgUpload    = "round.upload"
	MsgAggregate = "round.aggregate"
	MsgModel     = "round.model"
	// MsgExchange is MsgUpload and MsgAggregate on one stream: the request is an upload (Upload
	// body, the update as payload, refused as MsgUpload refuses it); the aggregator holds the
	// reply until the slice's aggregate is ready, at most AggregateWait, and answers with it (an
	// AggregateReply body and the aggregate as payload), or with no body when it was not ready in
	// time: the upload counts, and the peer asks for the aggregate with MsgAggregate. A
	// coordinator that predates it answers transport.ErrUnknownType; the peer then sends
	// MsgUpload.
	MsgExchange = "round.exchange"
)

// ChunkLen is the number of parameters per hashed chunk; slice boundaries fall on chunks.
const ChunkLen = 1 << 14

// Upload is the header body of MsgUpload and MsgExchange: a peer's compressed pseudo-gradient
// for one slice.
//
// Upload, AggregateRequest and AggregateReply travel as msgpack arrays of their fields in order
// (as_array): a third of the bytes of a map with the field names. Decoders take either form, so
// maps from earlier peers and coordinators are read as before, and a node from before the array
// form reads the arrays as long as the fields stay the same, in the same order: a field is never
// added to these three, a new message type is.
type Upload struct {
	_msgpack struct{} `msgpack:",as_array"`

	Cohort  uint64
	Round   uint32
	Slice   int
	Start   uint64 // the slice's range [Start, End) of the flat parameter vector
	End     uint64
	Samples uint64 // samples the peer consumed this round (a claim: the aggregator caps its weight)
}

// AggregateRequest asks for the aggregated pseudo-gradient of one slice of a round.
type AggregateRequest struct {
	_msgpack struct{} `msgpack:",as_array"`

	Cohort uint64
	Round  uint32
	Slice  int
}

// AggregateReply is the header body of the reply; the payload holds Δ[s] coded with DownCodec
// (package compress, error feedback kept by the aggregator), which every receiver decodes to the
// same floats.
type AggregateReply struct {
	_msgpack struct{} `msgpack:",as_array"`

	Start, End   uint64
	Contributors int  // updates averaged
	Aborted      bool // the round was abandoned: apply nothing, keep θ_t
}

// DownCodec is the codec of aggregates sent down to peers and coordinators: q8 with error
// feedback on the aggregator (4× fewer bytes than fp32, no measurable loss), or fp32 when the
// cohort's own codec is lossless fp32. The aggregate of top-k updates is mostly zeros (a few
// participants × a few per cent of the values), which q8 codes as zero bytes: zstd then takes it
// to a fifth of its size (measured: topk:0.01+q4, 8 peers, a slice of 72,458 values 74 KB →
// 14–17 KB), and on a lossy link one QUIC connection moves that much sooner.
func DownCodec(upCodec string) string {
	switch {
	case upCodec == "" || upCodec == "fp32":
		return "fp32"
	case strings.HasPrefix(upCodec, "topk:"):
		return "q8+zstd"
	}
	return "q8"
}

// ModelRequest asks for θ and the outer momentum of a cohort at its latest closed round.
type ModelRequest struct {
	Cohort uint64
}

// ModelReply is the header body of MsgModel's reply. The model itself — θ followed by the outer
// momentum, little-endian float32 of Params values each — is a blob with manifest root Root that
// the asker fetches in hashed chunks, striped over several connections (transport.Fetch): a
// resumable transfer that fills a slow, lossy link.
type ModelReply struct {
	Round  uint32 // the number of rounds applied to θ
	Params int
	Hash   []byte // protocol model hash of θ
	Root   []byte // transport manifest root of the blob
}

// UploadDeadline is when a round's uploads are due (unix ms): three quarters of the way from its
// opening to its deadline. The last quarter is for aggregating, applying the outer step and
// signing receipts, which the state accepts until the round's deadline.
func UploadDeadline(openedAt, deadline int64) int64 {
	return openedAt + (deadline-openedAt)*3/4
}

// Slice is a contiguous range of the flat parameter vector and the node that aggregates it.
type Slice struct {
	Start, End int
	Aggregator string
}

// Slices cuts n parameters into one slice per aggregator, on chunk boundaries, as evenly as the
// chunks allow. Aggregators are assigned in the order given. With more aggregators than chunks the
// extra aggregators get nothing.
func Slices(n int, aggregators []string) []Slice {
	if n <= 0 || len(aggregators) == 0 {
		return nil
	}
	chunks := (n + ChunkLen - 1) / ChunkLen
	k := min(len(aggregators), chunks)
	out := make([]Slice, 0, k)
	start := 0
	for i := 0; i < k; i++ {
		endChunk := (i + 1) * chunks / k
		end := min(endChunk*ChunkLen, n)
		out = append(out, Slice{Start: start, End: end, Aggregator: aggregators[i]})
		start = end
	}
	return out
}

// ChunkHashes appends the SHA-256 of each ChunkLen-parameter chunk of x (little-endian IEEE-754
// bytes; the last chunk may be short) to dst. x must start on a chunk boundary.
func ChunkHashes(dst [][32]byte, x []float32) [][32]byte {
	buf := make([]byte, 4*min(len(x), ChunkLen))
	for off := 0; off < len(x); off += ChunkLen {
		c := x[off:min(off+ChunkLen, len(x))]
		b := AppendFloats(buf[:0], c)
		dst = append(dst, sha256.Sum256(b))
	}
	return dst
}

// ModelHash is the hash replicas compare: SHA-256 of the concatenated chunk hashes.
func ModelHash(chunks [][32]byte) [32]byte {
	h := sha256.New()
	for _, c := range chunks {
		h.Write(c[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// HashParams is ModelHash(ChunkHashes(θ)).
func HashParams(theta []float32) [32]byte { return ModelHash(ChunkHashes(nil, theta)) }

// AppendFloats appends x as little-endian IEEE-754 bytes.
func AppendFloats(dst []byte, x []float32) []byte {
	for _, v := range x {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// DecodeFloats decodes want little-endian floats from b into dst (reused), rejecting a length
// mismatch and non-finite values.
func DecodeFloats(dst []float32, b []byte, want int) ([]float32, error) {
	if want < 0 || len(b) != 4*want {
		return nil, fmt.Errorf("%w: %d bytes for %d floats", ErrMalformed, len(b), want)
	}
	if cap(dst) < want {
		dst = make([]float32, want)
	}
	dst = dst[:want]
	for i := range dst {
		v := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%w: value %d is %v", ErrMalformed, i, v)
		}
		dst[i] = v
	}
	return dst, nil
}
