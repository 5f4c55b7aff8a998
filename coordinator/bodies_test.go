package coordinator

import (
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// The data-plane bodies as peers and coordinators encoded them before the array form: msgpack
// maps keyed by field name, the same fields in the same order.
type (
	mapUpload struct {
		Cohort  uint64
		Round   uint32
		Slice   int
		Start   uint64
		End     uint64
		Samples uint64
	}
	mapAggregateRequest struct {
		Cohort uint64
		Round  uint32
		Slice  int
	}
	mapAggregateReply struct {
		Start, End   uint64
		Contributors int
		Aborted      bool
	}
)

// TestBodiesAsArrays: Upload, AggregateRequest and AggregateReply encode as arrays of their
// fields, integers compact (golden bytes, as transport.Header.SetBody writes them), decode from the maps earlier nodes sent, and decode as the same values
// into the map-keyed types of earlier nodes (which read an array field by field, in order).
func TestBodiesAsArrays(t *testing.T) {
	cases := []struct {
		name       string
		val, old   any // the value, and the same as an earlier node had it
		newP, oldP any // pointers to decode into
		golden     string
	}{
		{"upload", protocol.Upload{Cohort: 1, Round: 2, Slice: 1, Start: 16384, End: 32768, Samples: 200},
			mapUpload{Cohort: 1, Round: 2, Slice: 1, Start: 16384, End: 32768, Samples: 200},
			&protocol.Upload{}, &mapUpload{}, "96010201cd4000cd8000ccc8"},
		{"aggregate-request", protocol.AggregateRequest{Cohort: 7, Round: 300, Slice: 2},
			mapAggregateRequest{Cohort: 7, Round: 300, Slice: 2},
			&protocol.AggregateRequest{}, &mapAggregateRequest{}, "9307cd012c02"},
		{"aggregate-reply", protocol.AggregateReply{Start: 0, End: 70000, Contributors: 6, Aborted: false},
			mapAggregateReply{Start: 0, End: 70000, Contributors: 6},
			&protocol.AggregateReply{}, &mapAggregateReply{}, "9400ce0001117006c2"},
		{"aggregate-reply-aborted", protocol.AggregateReply{Aborted: true}, mapAggregateReply{Aborted: true},
			&protocol.AggregateReply{}, &mapAggregateReply{}, "94000000c3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h transport.Header // as a message carries it
			if err := h.SetBody(tc.val); err != nil {
				t.Fatal(err)
			}
			arr := h.Body
			if got := hex.EncodeToString(arr); got != tc.golden {
				t.Fatalf("encoded %s, want %s", got, tc.golden)
			}
			old, err := msgpack.Marshal(tc.old)
			if err != nil {
				t.Fatal(err)
			}
			if err := msgpack.Unmarshal(old, tc.newP); err != nil {
				t.Fatalf("an earlier node's map: %v", err)
			}
			if got := reflect.ValueOf(tc.newP).Elem().Interface(); !reflect.DeepEqual(got, tc.val) {
				t.Fatalf("from the map: %+v, want %+v", got, tc.val)
			}
			if err := msgpack.Unmarshal(arr, tc.oldP); err != nil {
				t.Fatalf("an earlier node reading the array: %v", err)
			}
			if got := reflect.ValueOf(tc.oldP).Elem().Interface(); !reflect.DeepEqual(got, tc.old) {
				t.Fatalf("an earlier node read %+v, want %+v", got, tc.old)
			}
			if len(arr) >= len(old) {
				t.Fatalf("array %d bytes, map %d", len(arr), len(old))
			}
		})
	}
}

// fullQuery is protocol.Query as earlier nodes encoded it: every field but the last three written.
type fullQuery struct {
	What         string
	ID           uint64
	Linearizable bool
	After        uint32
	Number       uint32
	Member       string `msgpack:",omitempty"`
	Offset       uint32 `msgpack:",omitempty"`
	Limit        uint32 `msgpack:",omitempty"`
	Mine         bool   `msgpack:",omitempty"`
}

// TestQueryOmitsUnusedFields: a query leaves out the fields it does not use, and reads the same
// either way: earlier nodes' full maps decode to the same query, and earlier nodes read the short
// ones as the same query.
func TestQueryOmitsUnusedFields(t *testing.T) {
	for _, q := range []protocol.Query{
		{What: protocol.QueryNextRound, ID: 1, After: 3, Mine: true},
		{What: protocol.QueryRound, ID: 2, Number: 7, Mine: true},
		{What: protocol.QueryMember, Member: "ab", Linearizable: true},
		{What: protocol.QueryStatus},
	} {
		var short, full transport.Header
		if err := short.SetBody(q); err != nil {
			t.Fatal(err)
		}
		old := fullQuery{What: q.What, ID: q.ID, Linearizable: q.Linearizable, After: q.After, Number: q.Number, Member: q.Member, Mine: q.Mine}
		if err := full.SetBody(old); err != nil {
			t.Fatal(err)
		}
		if len(short.Body) >= len(full.Body) {
			t.Fatalf("%s: %d bytes, the full map %d", q.What, len(short.Body), len(full.Body))
		}
		var got protocol.Query
		if err := full.DecodeBody(&got); err != nil || got != q {
			t.Fatalf("%s: an earlier node's query read as %+v, %v", q.What, got, err)
		}
		var gotOld fullQuery
		if err := short.DecodeBody(&gotOld); err != nil || gotOld != old {
			t.Fatalf("%s: an earlier node read %+v, %v", q.What, gotOld, err)
		}
	}
}
