package consensus

import (
	"bytes"
	"math"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// fill sets every exported field of v (a pointer) to a value that is not the zero value, slices
// to two elements, recursively: a field added to a record and forgotten by its Clone shows up as
// a difference from the msgpack copy, or as an alias that a mutation reaches.
func fill(v reflect.Value, seed *int) {
	*seed++
	switch v.Kind() {
	case reflect.Pointer:
		fill(v.Elem(), seed)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), seed)
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fill(s.Index(i), seed)
		}
		v.Set(s)
	case reflect.String:
		v.SetString(string(rune('a' + *seed%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*seed))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*seed))
	}
}

// scramble changes every element reachable through a slice in v, in place.
func scramble(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		scramble(v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				scramble(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			e := v.Index(i)
			switch e.Kind() {
			case reflect.Uint8:
				e.SetUint(e.Uint() + 1)
			case reflect.String:
				e.SetString(e.String() + "!")
			default:
				scramble(e)
			}
		}
	case reflect.String:
		v.SetString(v.String() + "?")
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	}
}

func TestClonesAreDeepCopies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		orig  any
		clone func(any) any
	}{
		{"Round", &Round{}, func(v any) any { c := v.(*Round).Clone(); return &c }},
		{"Cohort", &Cohort{}, func(v any) any { c := v.(*Cohort).Clone(); return &c }},
		{"Proposal", &Proposal{}, func(v any) any { c := v.(*Proposal).Clone(); return &c }},
		{"Member", &Member{}, func(v any) any { c := v.(*Member).Clone(); return &c }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := 0
			fill(reflect.ValueOf(tc.orig), &seed)
			want, err := msgpack.Marshal(tc.orig)
			if err != nil {
				t.Fatal(err)
			}
			c := tc.clone(tc.orig)
			got, _ := msgpack.Marshal(c)
			if !bytes.Equal(got, want) {
				t.Fatalf("the clone differs from the record:\n%x\n%x", got, want)
			}
			scramble(reflect.ValueOf(c))
			after, _ := msgpack.Marshal(tc.orig)
			if !bytes.Equal(after, want) {
				t.Fatal("changing the clone changed the record: an alias")
			}
			if again, _ := msgpack.Marshal(c); bytes.Equal(again, want) {
				t.Fatal("scramble changed nothing: the test cannot fail")
			}
		})
	}
}

func BenchmarkRoundCopy(b *testing.B) {
	var r Round
	for i := range 1000 {
		id := string(rune('a'+i%26)) + "0123456789abcdef0123456789abcde"
		r.Participants = append(r.Participants, id)
		r.Receipts = append(r.Receipts, Receipt{Member: id, ModelHashAfter: make([]byte, 32)})
	}
	b.Run("clone", func(b *testing.B) {
		for b.Loop() {
			_ = r.Clone()
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		for b.Loop() {
			_ = deepCopy(r)
		}
	})
}

// A grant of one member encodes exactly as before GrantBody had More, both ways: logs written
// before it replay, and nodes from before it read a single grant.
func TestGrantBodyKeepsItsOldForm(t *testing.T) {
	type oldGrant struct {
		_msgpack struct{} `msgpack:",as_array"`
		Member   string
		Votes    uint64
	}
	old, err := msgpack.Marshal(&oldGrant{Member: "m1", Votes: 3})
	if err != nil {
		t.Fatal(err)
	}
	now, err := msgpack.Marshal(&GrantBody{Member: "m1", Votes: 3})
	if err != nil || !bytes.Equal(old, now) {
		t.Fatalf("a single grant encodes as %x, before as %x (%v)", now, old, err)
	}
	var back GrantBody
	if err := decodeExact(old, &back, MaxListLen); err != nil || back.Member != "m1" || back.Votes != 3 || back.More != nil {
		t.Fatalf("an old grant decodes as %+v, %v", back, err)
	}
	many, _ := msgpack.Marshal(&GrantBody{Member: "a", Votes: 1, More: []string{"b", "c"}})
	if err := decodeExact(many, &back, MaxListLen); err != nil || len(back.More) != 2 || back.More[1] != "c" {
		t.Fatalf("a grant of many decodes as %+v, %v", back, err)
	}
	for _, bad := range [][]byte{{0x91, 0xa1, 'x'}, {0x94, 0xa1, 'x', 0x01, 0x90, 0x01}} {
		if err := decodeExact(bad, &back, MaxListLen); err == nil {
			t.Errorf("%x decodes", bad)
		}
	}
}

// A pool that returned nothing encodes as the ten-element array it was before Returned, so
// snapshots and state hashes from before read and hash the same; one that returned adds it.
func TestPoolKeepsItsOldForm(t *testing.T) {
	type oldPool struct {
		_msgpack                                  struct{} `msgpack:",as_array"`
		Cohort, Total                             uint64
		Rounds                                    uint32
		Paid, Carry                               uint64
		LastScored, RoundsPaid, DataBP, ComputeBP uint32
	}
	o := oldPool{Cohort: 1, Total: 1000, Rounds: 4, Paid: 750, Carry: 3, LastScored: 3, RoundsPaid: 3, DataBP: 8000, ComputeBP: 2000}
	old, _ := msgpack.Marshal(&o)
	p := Pool{Cohort: 1, Total: 1000, Rounds: 4, Paid: 750, Carry: 3, LastScored: 3, RoundsPaid: 3, DataBP: 8000, ComputeBP: 2000}
	now, err := msgpack.Marshal(&p)
	if err != nil || !bytes.Equal(old, now) {
		t.Fatalf("a pool encodes as %x, before as %x (%v)", now, old, err)
	}
	var back Pool
	if err := msgpack.Unmarshal(old, &back); err != nil || back != p {
		t.Fatalf("an old pool decodes as %+v, %v", back, err)
	}
	p.Returned = 250
	b, _ := msgpack.Marshal(&p)
	if err := msgpack.Unmarshal(b, &back); err != nil || back != p {
		t.Fatalf("a pool that returned decodes as %+v, %v", back, err)
	}
	if err := msgpack.Unmarshal([]byte{0x93, 0x01, 0x02, 0x03}, &back); err == nil {
		t.Fatal("a three-element pool decodes")
	}
}

// Settings with no down codec encode as the eleven-element array they were before DownCodec, so
// logs, snapshots and state hashes from before read and hash the same, in a proposal too; settings
// with one add it.
func TestHyperparamsKeepTheirOldForm(t *testing.T) {
	type oldHyperparams struct {
		_msgpack                                  struct{} `msgpack:",as_array"`
		InnerSteps, Rounds                        uint32
		Codec, OuterLR, OuterMomentum, ErrorDecay string
		InnerLR, WeightDecay                      string
		Warmup                                    uint32
		Schedule, ClipNorm                        string
	}
	o := oldHyperparams{InnerSteps: 50, Rounds: 20, Codec: "topk:0.03/m+q1", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9",
		InnerLR: "0.001", WeightDecay: "0", Warmup: 10, Schedule: "cosine", ClipNorm: "1"}
	h := Hyperparams{InnerSteps: 50, Rounds: 20, Codec: "topk:0.03/m+q1", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9",
		InnerLR: "0.001", WeightDecay: "0", Warmup: 10, Schedule: "cosine", ClipNorm: "1"}
	old, _ := msgpack.Marshal(&o)
	for name, v := range map[string]any{"pointer": &h, "value": h, "in a proposal": Proposal{Params: h}} {
		now, err := msgpack.Marshal(v)
		if name == "in a proposal" {
			var back Proposal
			if err := msgpack.Unmarshal(now, &back); err != nil || back.Params != h {
				t.Fatalf("a proposal's settings decode as %+v, %v", back.Params, err)
			}
			if !bytes.Contains(now, old) {
				t.Fatalf("a proposal %x does not hold its settings' old form %x", now, old)
			}
			continue
		}
		if err != nil || !bytes.Equal(old, now) {
			t.Fatalf("%s: settings encode as %x, before as %x (%v)", name, now, old, err)
		}
	}
	var back Hyperparams
	if err := msgpack.Unmarshal(old, &back); err != nil || back != h {
		t.Fatalf("old settings decode as %+v, %v", back, err)
	}
	h.DownCodec = "topk:0.03/m+q8"
	b, _ := msgpack.Marshal(h)
	if err := msgpack.Unmarshal(b, &back); err != nil || back != h {
		t.Fatalf("settings with a down codec decode as %+v, %v", back, err)
	}
	if bytes.Equal(b, old) {
		t.Fatal("the down codec is not encoded")
	}
	for _, bad := range [][]byte{{0x93, 0x01, 0x02, 0xa1, 'x'}, append([]byte{0x9d}, make([]byte, 13)...)} {
		if err := msgpack.Unmarshal(bad, &back); err == nil {
			t.Errorf("%x decodes", bad)
		}
	}
	if err := msgpack.Unmarshal([]byte{0xc0}, &back); err != nil || back != (Hyperparams{}) {
		t.Errorf("nil decodes as %+v, %v", back, err)
	}
}

// An influence without credit encodes as the two-element array it was before Credit, so logs,
// snapshots and state hashes from before read and hash the same; one with credit round-trips.
func TestInfluenceKeepsItsOldForm(t *testing.T) {
	type oldInfluence struct {
		_msgpack    struct{} `msgpack:",as_array"`
		Contributor string
		Value       int64
	}
	for _, v := range []int64{0, 1, -1, 127, -33, 1 << 40, -(1 << 62), math.MaxInt64, math.MinInt64} {
		old, _ := msgpack.Marshal(&oldInfluence{Contributor: "k/alice", Value: v})
		x := Influence{Contributor: "k/alice", Value: v}
		now, err := msgpack.Marshal(&x)
		if err != nil || !bytes.Equal(old, now) {
			t.Fatalf("influence %d encodes as %x, before as %x (%v)", v, now, old, err)
		}
		var back Influence
		if err := msgpack.Unmarshal(old, &back); err != nil || back != x {
			t.Fatalf("an old influence decodes as %+v, %v", back, err)
		}
		x.Credit = 123456789
		b, _ := msgpack.Marshal(&x)
		if err := msgpack.Unmarshal(b, &back); err != nil || back != x {
			t.Fatalf("an influence with credit decodes as %+v, %v", back, err)
		}
	}
	var back Influence
	for _, bad := range [][]byte{{0x91, 0xa1, 0x61}, {0x94, 0xa1, 0x61, 0x01, 0x02, 0x03}, {0x92, 0x01, 0x02}} {
		if err := msgpack.Unmarshal(bad, &back); err == nil {
			t.Errorf("%x decodes as an influence", bad)
		}
	}
}

// A round's credits may sum to CreditScale, not past it (nor wrap around).
func TestInfluenceCreditsBounded(t *testing.T) {
	in := map[string]bool{"k/a": true, "k/b": true}
	for _, tc := range []struct {
		a, b uint64
		ok   bool
	}{
		{0, 0, true},
		{CreditScale / 2, CreditScale / 2, true},
		{CreditScale, 0, true},
		{CreditScale, 1, false},
		{math.MaxUint64, 2, false},
	} {
		err := checkInfluence([]Influence{{Contributor: "k/a", Credit: tc.a}, {Contributor: "k/b", Credit: tc.b}}, in)
		if (err == nil) != tc.ok {
			t.Errorf("credits %d + %d: %v", tc.a, tc.b, err)
		}
	}
}
