package protocol

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrWrongModel is wrapped when a coordinator offers or sends a model other than the one asked
// for: another round's, another size, or bytes whose hash is not the recorded one.
var ErrWrongModel = errors.New("protocol: not the model asked for")

// AppendModel appends the model blob a coordinator serves (MsgModel): θ then the outer momentum,
// little-endian float32, len(theta) values each.
func AppendModel(dst []byte, theta, momentum []float32) []byte {
	dst = AppendFloats(dst, theta)
	return AppendFloats(dst, momentum)
}

// Want checks a MsgModel reply against the model the asker needs — params values whose model hash
// is hash — before it fetches a byte of the blob.
func (r ModelReply) Want(params int, hash []byte) error {
	switch {
	case r.Params != params:
		return fmt.Errorf("%w: %d parameters, want %d", ErrWrongModel, r.Params, params)
	case !bytes.Equal(r.Hash, hash):
		return fmt.Errorf("%w: round %d's model (%x), want %x", ErrWrongModel, r.Round, r.Hash[:min(len(r.Hash), 8)], hash[:min(len(hash), 8)])
	case len(r.Root) != 32:
		return fmt.Errorf("%w: blob root of %d bytes", ErrMalformed, len(r.Root))
	}
	return nil
}

// DecodeModel decodes a model blob of params parameters and checks θ against the model hash the
// replicated state recorded: a coordinator cannot hand anyone a model the cohort did not train.
func DecodeModel(blob []byte, params int, hash []byte) (theta, momentum []float32, err error) {
	both, err := DecodeFloats(nil, blob, 2*params)
	if err != nil {
		return nil, nil, err
	}
	if h := HashParams(both[:params]); !bytes.Equal(h[:], hash) {
		return nil, nil, fmt.Errorf("%w: the blob's θ hashes to %x, want %x", ErrWrongModel, h[:8], hash[:min(len(hash), 8)])
	}
	return both[:params:params], both[params:], nil
}
