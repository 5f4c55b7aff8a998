// Package safetensors encodes and decodes the safetensors tensor file format, float32 tensors only.
//
// A file is an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object, then the raw
// tensor bytes:
//
//	{"__metadata__": {"key": "value", ...},
//	 "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//
// data_offsets are byte offsets into the data that follows the header, half-open. Encode writes the
// metadata first and the tensors in the order given, their data contiguous in that order, and pads
// the header with spaces so the data starts 8-byte aligned, as the reference implementation does.
// Values are little-endian, row-major (C order).
//
// Decode treats its input as hostile: it refuses a header length beyond the file or the limit,
// malformed or non-object JSON, duplicate names, unknown or unsupported dtypes, negative or
// overflowing shapes, offsets out of range, overlapping or leaving holes, and a byte range whose
// length is not shape × dtype size. Every error wraps ErrFormat (ErrLimit for limits); nothing
// panics, and memory is bounded by the input size plus the header limit.
//
//	b, _ := safetensors.Encode([]safetensors.Tensor{{Name: "w", DType: "F32", Shape: []int{2}, Data: []float32{1, 2}}}, nil)
//	f, err := safetensors.Decode(b, safetensors.Limits{})
package safetensors
