package peer

import (
	"context"
	"crypto/ed25519"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

func seedIdentity(t *testing.T, seed byte) *transport.Identity {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(s))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestUploadExchangeOrFallback: a member's upload goes as protocol.MsgExchange and brings the
// aggregate back when the aggregator answers with it; an aggregator from before MsgExchange
// (ErrUnknownType) gets MsgUpload, that time and after, and the peer fetches the aggregate
// itself; an exchange answered without a body means accepted, not ready.
func TestUploadExchangeOrFallback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		exchange bool // the aggregator knows MsgExchange
		ready    bool // and answers with the aggregate
	}{
		{"exchange-ready", true, true},
		{"exchange-not-ready", true, false},
		{"earlier-aggregator", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var uploads, exchanges atomic.Int32
			mux := transport.NewMux()
			lim := transport.Limit{MaxPayload: 1 << 20}
			mux.Handle(protocol.MsgUpload, func(_ context.Context, _ transport.NodeID, req transport.Message) (transport.Message, error) {
				uploads.Add(1)
				return transport.Message{Header: transport.Header{Type: protocol.MsgUpload}}, nil
			}, lim)
			if tc.exchange {
				mux.Handle(protocol.MsgExchange, func(_ context.Context, _ transport.NodeID, req transport.Message) (transport.Message, error) {
					exchanges.Add(1)
					var u protocol.Upload
					if err := req.DecodeBody(&u); err != nil {
						return transport.Message{}, err
					}
					out := transport.Message{Header: transport.Header{Type: protocol.MsgExchange}}
					if !tc.ready {
						return out, nil
					}
					if err := out.SetBody(protocol.AggregateReply{Start: u.Start, End: u.End, Contributors: 2}); err != nil {
						return transport.Message{}, err
					}
					out.Payload = []byte("aggregate")
					return out, nil
				}, lim)
			}
			srv, err := transport.ListenAddr("127.0.0.1:0", transport.Config{Identity: seedIdentity(t, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go srv.Serve(ctx, mux)
			cl, err := client.Dial(client.Config{Addrs: []string{srv.Addr().String()}, Identity: seedIdentity(t, 2)})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			co := ClientCoordinators(cl).(*clientCoordinators)
			co.addrs["agg"] = srv.Addr().String() // as a status reply would give it
			for n := 1; n <= 2; n++ {
				rep, agg, ok, err := co.Upload(ctx, "agg", protocol.Upload{Cohort: 1, Round: uint32(n), Start: 0, End: 10, Samples: 4}, []byte("update"))
				if err != nil {
					t.Fatal(err)
				}
				if ok != tc.ready || ok && (rep.Contributors != 2 || rep.End != 10 || string(agg) != "aggregate") {
					t.Fatalf("upload %d: ok %v, reply %+v, %q", n, ok, rep, agg)
				}
			}
			wantUp, wantX := int32(0), int32(2)
			if !tc.exchange {
				wantUp, wantX = 2, 0
			}
			if got, gotX := uploads.Load(), exchanges.Load(); got != wantUp || gotX != wantX {
				t.Fatalf("%d uploads and %d exchanges served, want %d and %d", got, gotX, wantUp, wantX)
			}
			if _, plain := co.plain.Load("agg"); plain == tc.exchange {
				t.Fatalf("aggregator remembered as earlier: %v, want %v", plain, !tc.exchange)
			}
		})
	}
}
