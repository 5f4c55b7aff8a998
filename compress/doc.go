// Package compress codes pseudo-gradients ([]float32) into compact, checked
// messages: lossy formats (fp16, bf16, blockwise q8/q4/q2, blockwise sign
// q1), top-k sparsification, PowerSGD-style low-rank factors, their
// compositions, an optional lossless zstd stage, and error feedback. It
// knows nothing of models: a Shape (ranges of the vector that are matrices)
// is all it learns of one, and only the low-rank codec and top-k's /m
// (select within matrices, keep every other value) use it.
//
// # Settings
//
// A Setting names a codec and round-trips through Parse and String (see
// Setting for the grammar): "fp32", "fp16", "bf16", "q8", "q4/b128",
// "q8/clip3/sr", "topk:0.01+q4", "lowrank:4+q8", "topk:0.001/c65536+q2+zstd",
// "topk:0.03/m+q1".
// The canonical String is written into every message header.
//
// # Main loop
//
// The sender owns a Residual (error feedback: e += Δ; msg = C(e);
// e −= decode(msg)); the receiver only decodes:
//
//	codec, err := compress.New(compress.Config{Setting: compress.MustParse("topk:0.01+q4"), Seed: seed})
//	res, err := codec.NewResidual(len(params))
//	for round := ... {
//		msg, err = res.Encode(msg[:0], delta) // sender: delta = θ_t − θ_i
//		send(msg)
//	}
//	// receiver (its own Codec of the same Config):
//	vals, err = codec.Decode(vals[:0], msg)
//
// Codec.Encode (no error feedback) and Codec.Decode are append-style and do
// not allocate in steady state once their scratch buffers have grown. A Codec
// is not safe for concurrent use; use one per goroutine.
//
// # Contract
//
//   - Deterministic: the bytes of a message are a pure function of (Setting,
//     Shape, Seed, input) — and, for Residual, of the previous rounds. Every
//     loop has a fixed order; there is no clock, goroutine or global random
//     source. Top-k ties are broken by smaller index.
//   - Non-finite input is rejected: Encode returns ErrNonFinite naming the
//     first NaN/±Inf index and leaves dst (and a Residual) unchanged. Decoded
//     values are always finite.
//   - Error bounds, per element x and decoded d (L = 127, 7, 1 for q8, q4,
//     q2; a = the block's absmax after clipping):
//     fp32: d = x. fp16: |x−d| ≤ max(2⁻¹¹|x|, 2⁻²⁵) for |x| ≤ 65504, larger
//     magnitudes saturate to ±65504. bf16: |x−d| ≤ max(2⁻⁸|x|, 2⁻¹³³),
//     saturating at ±max bfloat16. q: |x−d| ≤ a/(2L) (round to nearest even),
//     a/L (stochastic), plus |x| − k·σ for values clipped at ±k·σ, plus
//     float32 rounding (≤ 2⁻²²·a). q1: d = ±float32(mean |x| of the block),
//     negative for x < 0. top-k: the kept values (the reference
//     selection: largest |x| per chunk, smaller index first on ties; with /m
//     every value outside the chunked matrices too) within their format's
//     bound, every other value decodes to 0. low-rank:
//     ‖M − P·Qᵀ‖_F ≤ ‖M‖_F (up to rounding of the factors), pass-through
//     values within their format's bound.
//   - Error feedback loses nothing: Σ decoded messages + residual = Σ inputs
//     (exactly per round for fp32/fp16/bf16, top-k of those, and
//     deterministic unclipped q formats; within an ulp per round otherwise).
//   - Hostile messages: Decode returns an error wrapping a sentinel
//     (ErrCorrupt, ErrChecksum, ErrVersion, ErrSetting, ErrSettingMismatch,
//     ErrShapeMismatch, ErrLength) and never panics. Every length in the
//     payload follows from the header's element count and is checked
//     exactly before anything is allocated; the count itself is bounded by
//     Config.MaxElements, and the output of a zstd stage grows only with the
//     bytes actually decompressed. A top-k message of a few bytes per chunk
//     legitimately claims a whole chunk of values, so receivers should set
//     MaxElements to the length they expect.
//
// # Wire format (version 1)
//
// All integers little-endian. See FORMAT.md for the payload of every stage.
//
//	offset  size  field
//	0       4     magic "CHZP"
//	4       1     version = 1
//	5       1     L = length of the setting string
//	6       L     canonical setting string (ASCII, e.g. "topk:0.01+q4")
//	6+L     8     element count n (uint64)
//	14+L    8     shape hash (Shape.Hash: FNV-1a 64 of the segments; 0 = none)
//	22+L    4     CRC-32C (Castagnoli) of bytes [0, 22+L) followed by the payload
//	26+L    …     payload, to the end of the message (zstd-compressed if the
//	              setting ends in "+zstd")
//
// The payload has exactly the length the setting and n determine; anything
// else is ErrCorrupt. The message is not self-delimiting: the transport frames it.
//
// # Low-rank and error feedback
//
// The low-rank codec (PowerSGD, Vogels et al. 2019) sends, for every
// matrix segment, P (Rows×r, orthonormal columns) and Q = Mᵀ·P, computed by
// Iters power iterations from a seeded Q₀. It keeps only r directions of M
// per round: what it drops stays in the Residual and is sent in later
// rounds. PowerSGD converges only with this error feedback, and its single
// power iteration per round is only accurate because each round starts
// from the previous round's Q: Residual warm-starts exactly so, while
// Codec.Encode (no state) always starts from the seeded Q₀. Use low-rank
// through a Residual.
package compress
