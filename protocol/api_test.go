package protocol

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cohortlab/cohort/consensus"
)

func TestQueryPage(t *testing.T) {
	for _, tc := range []struct {
		offset, limit uint32
		n, lo, hi     int
		err           bool
	}{
		{0, 0, 10, 0, 10, false},
		{0, 0, 1000, 0, DefaultPage, false},
		{256, 0, 1000, 256, 512, false},
		{990, 100, 1000, 990, 1000, false},
		{2000, 10, 1000, 1000, 1000, false}, // past the end: an empty page
		{0, MaxPage, 5000, 0, MaxPage, false},
		{0, MaxPage + 1, 5000, 0, 0, true},
	} {
		lo, hi, err := Query{What: QueryMembers, Offset: tc.offset, Limit: tc.limit}.Page(tc.n)
		if tc.err {
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("offset %d limit %d: err %v, want ErrTooLarge", tc.offset, tc.limit, err)
			}
			continue
		}
		if err != nil || lo != tc.lo || hi != tc.hi {
			t.Errorf("offset %d limit %d of %d: [%d, %d) %v, want [%d, %d)", tc.offset, tc.limit, tc.n, lo, hi, err, tc.lo, tc.hi)
		}
	}
}

// A round of 1,000 participants trimmed for one of them is a few hundred bytes, whatever the
// cohort's size.
func TestMineRoundDoesNotGrowWithTheCohort(t *testing.T) {
	var r consensus.Round
	r.Cohort, r.Number, r.Status = 1, 3, consensus.RoundOpen
	r.Slices = []consensus.SliceAssignment{{Start: 0, End: 10, Aggregator: "agg"}}
	for i := range 1000 {
		m := fmt.Sprintf("%032x", i)
		r.Participants = append(r.Participants, m)
		r.Receipts = append(r.Receipts, consensus.Receipt{Member: m, SamplesUsed: 100, ModelHashAfter: make([]byte, 32)})
		r.Influence = append(r.Influence, consensus.Influence{Contributor: consensus.ContributorKey(m, "data"), Value: int64(i)})
	}
	me := fmt.Sprintf("%032x", 417)
	mine := MineRound(r, me)
	if len(mine.Participants) != 1 || mine.Participants[0] != me || len(mine.Receipts) != 1 || mine.Receipts[0].Member != me ||
		len(mine.Influence) != 1 || mine.Influence[0].Value != 417 || len(mine.Slices) != 1 {
		t.Fatalf("trimmed round: %+v", mine)
	}
	if out := MineRound(r, "stranger"); len(out.Participants)+len(out.Receipts)+len(out.Influence) != 0 {
		t.Fatalf("a non-participant's view lists %d participants", len(out.Participants))
	}
	full, err := EncodeQueryReply(Query{What: QueryRound}, QueryReply{Rounds: []consensus.Round{r}})
	if err != nil {
		t.Fatal(err)
	}
	small, err := EncodeQueryReply(Query{What: QueryRound}, QueryReply{Rounds: []consensus.Round{mine}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("round of 1000 participants: %d bytes; one participant's view: %d bytes", len(full), len(small))
	if len(small) > 512 {
		t.Fatalf("one participant's view of the round is %d bytes", len(small))
	}
	back, err := DecodeQueryReply(full)
	if err != nil || len(back.Rounds) != 1 || len(back.Rounds[0].Participants) != 1000 {
		t.Fatalf("decode: %v", err)
	}
}

func TestQueryReplyLimits(t *testing.T) {
	big := make([]consensus.Member, 0, 2000)
	for i := range 2000 {
		big = append(big, consensus.Member{ID: fmt.Sprint(i), Name: string(make([]byte, 10_000))})
	}
	if _, err := EncodeQueryReply(Query{What: QueryMembers}, QueryReply{Members: big}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a 20 MB reply: err %v, want ErrTooLarge", err)
	}
	for _, b := range [][]byte{
		nil,
		{0xc1},                                // never used
		{0xdf, 0xff, 0xff, 0xff, 0xff},        // a map of 4 billion entries in 5 bytes
		{0x81, 0xa7, 'M', 'e', 'm', 'b', 'e'}, // truncated
	} {
		if _, err := DecodeQueryReply(b); err == nil && len(b) > 0 {
			t.Errorf("decode %x: no error", b)
		} else if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("decode %x: %v does not wrap ErrMalformed", b, err)
		}
	}
}

func FuzzDecodeQueryReply(f *testing.F) {
	var r consensus.Round
	r.Participants = []string{"a", "b"}
	r.Receipts = []consensus.Receipt{{Member: "a"}}
	for _, rep := range []QueryReply{
		{Rounds: []consensus.Round{r}, Total: 3},
		{Members: []consensus.Member{{ID: "x", Contributors: []string{"c"}}}},
		{Status: &Status{ID: "c1", Servers: []ServerInfo{{ID: "c1", Addr: "a:1"}}}},
		{Ledger: &consensus.Ledger{Balances: []consensus.Balance{{Contributor: "a/b", Amount: 3}}}},
	} {
		b, err := EncodeQueryReply(Query{}, rep)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeQueryReply(b)
		if err != nil {
			return
		}
		if _, err := EncodeQueryReply(Query{}, r); err != nil {
			t.Fatalf("a decoded reply does not encode: %v", err)
		}
	})
}
