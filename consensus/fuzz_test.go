package consensus

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzDecodeCommand: decoding a log entry (envelope + body) never panics; whatever decodes
// re-encodes to a command that decodes to the same thing, and applying it to a populated state
// either succeeds or returns one of the package's errors.
func FuzzDecodeCommand(f *testing.F) {
	cmds := scenario(f, 9, 3, 2)
	for _, c := range cmds {
		b, err := c.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x93, 0x01, 0x00, 0xc0})
	base := applyAll(f, cmds[:len(cmds)-3])
	baseSnap, err := base.MarshalSnapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decode error not wrapping ErrDecode/ErrVersion: %v", err)
			}
			return
		}
		body, berr := c.Env.DecodeBody()
		re, err := c.Marshal()
		if err != nil {
			if len(b) <= MaxCommandBytes && !errors.Is(err, ErrInvalid) {
				t.Fatalf("re-encode: %v", err)
			}
			return
		}
		c2, err := DecodeCommand(re)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if !bytes.Equal(c2.Env.SigningBytes(), c.Env.SigningBytes()) || c2.Time != c.Time || !bytes.Equal(c2.Env.Sig, c.Env.Sig) {
			t.Fatal("round trip changed the command")
		}
		if berr == nil {
			if body.Type() != c.Env.Type {
				t.Fatalf("body type %s for envelope type %s", body.Type(), c.Env.Type)
			}
		}
		s, err := UnmarshalSnapshot(baseSnap)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(c); err != nil && errors.Unwrap(err) == nil {
			t.Fatalf("Apply error wraps no sentinel: %v", err)
		}
	})
}

// FuzzDecodeEnvelope: decoding a client's envelope never panics, and what decodes round-trips.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, c := range scenario(f, 13, 2, 1) {
		b, err := c.Env.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x96, 0x01, 0x01, 0xa0, 0x01, 0xc4, 0x00, 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error wraps neither ErrDecode nor ErrVersion: %v", err)
			}
			return
		}
		re, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		e2, err := DecodeEnvelope(re)
		if err != nil || !bytes.Equal(e2.SigningBytes(), e.SigningBytes()) || !bytes.Equal(e2.Sig, e.Sig) {
			t.Fatalf("round trip: %v", err)
		}
		_, _ = e.DecodeBody()
	})
}

// FuzzRestore: restoring arbitrary snapshot bytes never panics. The fuzzer mostly gets past the
// checksum through the second argument mode, where the input is taken as the payload and wrapped
// with a valid header and checksum, so the decoder and its consistency checks are exercised too.
// A restored state re-encodes canonically (encode ∘ decode ∘ encode is stable) and accepts commands
// without panicking.
func FuzzRestore(f *testing.F) {
	cmds := scenario(f, 11, 3, 2)
	s := applyAll(f, cmds)
	b, err := s.MarshalSnapshot()
	if err != nil {
		f.Fatal(err)
	}
	payload := b[len(snapshotMagic) : len(b)-sha256.Size]
	f.Add(b, false)
	f.Add(payload, true)
	f.Add(b[:len(b)/2], false)
	empty, _ := NewState().MarshalSnapshot()
	f.Add(empty, false)
	probe := cmds[len(cmds)-4:]
	f.Fuzz(func(t *testing.T, in []byte, wrap bool) {
		if wrap {
			w := append(append([]byte{}, snapshotMagic...), in...)
			sum := sha256.Sum256(w)
			in = append(w, sum[:]...)
		}
		st, err := UnmarshalSnapshot(in)
		if err != nil {
			if !errors.Is(err, ErrSnapshot) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error not wrapping ErrSnapshot: %v", err)
			}
			return
		}
		b1, err := st.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		st2, err := UnmarshalSnapshot(b1)
		if err != nil {
			t.Fatalf("re-encoded snapshot rejected: %v", err)
		}
		b2, _ := st2.MarshalSnapshot()
		if !bytes.Equal(b1, b2) {
			t.Fatal("encode(decode(encode(x))) is not stable")
		}
		for _, c := range probe {
			_, _ = st.Apply(c)
		}
		_ = st.Ledger()
		_ = st.Proposals()
		_ = st.Cohorts()
	})
}

// FuzzDecodeBatch: decoding a batch log entry never panics and its errors wrap ErrDecode or
// ErrVersion; whatever decodes re-encodes to an entry that decodes to the same commands, and the
// raft adapter applies it to a populated state with one response per command, each error
// wrapping one of the package's sentinels. Seeded with valid batches of a scenario's commands.
func FuzzDecodeBatch(f *testing.F) {
	cmds := scenario(f, 17, 3, 2)
	for _, n := range []int{1, 2, 5, len(cmds)} {
		for lo := 0; lo < len(cmds); lo += n {
			var b Batch
			b.Leader = testID("c1")
			for _, c := range cmds[lo:min(lo+n, len(cmds))] {
				b.Items = append(b.Items, BatchItem{Time: c.Time, Env: c.Env})
			}
			data, err := b.Marshal()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte{batchTag})
	f.Add([]byte{batchTag, 0x93, 0x01, 0xa0, 0x91, 0x92, 0x01, 0xc0})
	base := applyAll(f, cmds[:len(cmds)-3])
	baseSnap, err := base.MarshalSnapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bt, err := DecodeBatch(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decode error not wrapping ErrDecode/ErrVersion: %v", err)
			}
			return
		}
		re, err := bt.Marshal()
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("re-encode: %v", err)
			}
			return
		}
		bt2, err := DecodeBatch(re)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		c1, c2 := bt.Commands(), bt2.Commands()
		if len(c1) != len(c2) {
			t.Fatalf("round trip: %d commands, then %d", len(c1), len(c2))
		}
		for i := range c1 {
			if !bytes.Equal(c1[i].Env.SigningBytes(), c2[i].Env.SigningBytes()) || c1[i].Time != c2[i].Time ||
				!bytes.Equal(c1[i].Env.Sig, c2[i].Env.Sig) || c1[i].Leader != c2[i].Leader {
				t.Fatalf("round trip changed command %d", i)
			}
		}
		s, err := UnmarshalSnapshot(baseSnap)
		if err != nil {
			t.Fatal(err)
		}
		fs := &fsm{state: s}
		rs, ok := fs.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: b}})[0].(batchResponse)
		if !ok || len(rs) != len(c1) {
			t.Fatalf("adapter answered %d responses (%v) for %d commands", len(rs), ok, len(c1))
		}
		for _, r := range rs {
			if r.err != nil && errors.Unwrap(r.err) == nil {
				t.Fatalf("Apply error wraps no sentinel: %v", r.err)
			}
		}
	})
}
