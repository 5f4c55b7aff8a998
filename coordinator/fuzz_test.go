package coordinator

import (
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// FuzzMessageBodies feeds arbitrary header bodies to every message body the coordinator decodes
// from the network: decoding must fail cleanly or give a value that encodes again. (The score
// partial is a payload, not a header body: attribution's FuzzDecodePartial.)
func FuzzMessageBodies(f *testing.F) {
	seeds := []any{
		protocol.Upload{Cohort: 1, Round: 2, Slice: 0, Start: 0, End: 100, Samples: 64},
		protocol.AggregateRequest{Cohort: 1, Round: 2, Slice: 1},
		protocol.ModelRequest{Cohort: 1},
		protocol.ModelReply{Round: 3, Params: 10, Hash: make([]byte, 32)},
		protocol.AggregateReply{Start: 0, End: 10, Contributors: 3},
		protocol.Query{What: protocol.QueryRounds, ID: 1, Linearizable: true},
		joinRequest{ID: "c4", Addr: "127.0.0.1:7004", Env: consensus.Envelope{Version: 1, Issuer: "x", RequestID: 1}},
		ScoreRequest{Cohort: 1, Round: 2, Slice: 1},
	}
	// The maps earlier peers and coordinators sent for the bodies now sent as arrays.
	seeds = append(seeds, mapUpload{Cohort: 1, Round: 2, End: 100, Samples: 64}, mapAggregateRequest{Cohort: 1, Round: 2, Slice: 1},
		mapAggregateReply{End: 10, Contributors: 3})
	for _, s := range seeds {
		h := transport.Header{}
		if err := h.SetBody(s); err != nil {
			f.Fatal(err)
		}
		f.Add(h.Body)
	}
	f.Add([]byte{0x93, 0x01, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xf0})
	f.Fuzz(func(t *testing.T, body []byte) {
		h := transport.Header{Type: "fuzz", Body: body}
		targets := []any{&protocol.Upload{}, &protocol.AggregateRequest{}, &protocol.ModelRequest{}, &protocol.ModelReply{},
			&protocol.AggregateReply{}, &protocol.Query{}, &joinRequest{}, &consensus.Envelope{}, &protocol.SubmitReply{}, &protocol.QueryReply{},
			&ScoreRequest{}}
		for _, v := range targets {
			if err := h.DecodeBody(v); err != nil {
				continue
			}
			var again transport.Header
			if err := again.SetBody(v); err != nil {
				t.Fatalf("%T decoded but does not encode: %v", v, err)
			}
		}
	})
}
