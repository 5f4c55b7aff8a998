package protocol

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

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
	full, err := msgpack.Marshal(&QueryReply{Rounds: []consensus.Round{r}})
	if err != nil {
		t.Fatal(err)
	}
	small, err := msgpack.Marshal(&QueryReply{Rounds: []consensus.Round{mine}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("round of 1000 participants: %d bytes; one participant's view: %d bytes", len(full), len(small))
	if len(small) > 512 {
		t.Fatalf("one participant's view of the round is %d bytes", len(small))
	}
}

func TestCheckQueryReply(t *testing.T) {
	if err := CheckQueryReply(Query{What: QueryMembers}, MaxQueryReply); err != nil {
		t.Fatal(err)
	}
	if err := CheckQueryReply(Query{What: QueryMembers}, MaxQueryReply+1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a reply over the limit: %v, want ErrTooLarge", err)
	}
}
