package consensus

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Records that gained a field keep their old encoding while the field is unset: they are written
// as the array of their fields, the new last one only when set, so that logs, snapshots and state
// hashes from before it read and hash the same (Pool.Returned, Hyperparams.DownCodec,
// Influence.Credit, GrantBody.More).

// encodeTrailing writes fs (pointers to the record's fields, in wire order) as one array, without
// the last field when set is false.
func encodeTrailing(e *msgpack.Encoder, fs []any, set bool) error {
	if !set {
		fs = fs[:len(fs)-1]
	}
	if err := e.EncodeArrayLen(len(fs)); err != nil {
		return err
	}
	for _, f := range fs {
		if err := e.Encode(f); err != nil {
			return err
		}
	}
	return nil
}

// decodeTrailing reads what encodeTrailing wrote into fs, which the caller has zeroed: an array of
// len(fs) or len(fs)−1 elements, or, when orEmpty, an empty or nil one (the zero record).
func decodeTrailing(d *msgpack.Decoder, what string, fs []any, orEmpty bool) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if orEmpty && n <= 0 {
		return nil
	}
	if n != len(fs) && n != len(fs)-1 {
		return fmt.Errorf("%s: an array of %d elements, want %d or %d", what, n, len(fs)-1, len(fs))
	}
	for _, f := range fs[:n] {
		if err := d.Decode(f); err != nil {
			return err
		}
	}
	return nil
}
