package client

import (
	"errors"
	"reflect"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

func TestDecodeQueryReplyRefusesBadBytes(t *testing.T) {
	var r consensus.Round
	r.Participants = []string{"a", "b"}
	good, err := transport.EncodePayload(&protocol.QueryReply{Rounds: []consensus.Round{r}, Total: 1})
	if err != nil {
		t.Fatal(err)
	}
	if back, err := decodeQueryReply(good); err != nil || len(back.Rounds) != 1 || len(back.Rounds[0].Participants) != 2 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for _, b := range [][]byte{
		{0xc1},                         // never used
		{0xdf, 0xff, 0xff, 0xff, 0xff}, // a map of 4 billion entries in 5 bytes
		good[:len(good)-3],             // truncated
		make([]byte, protocol.MaxQueryReply+1),
	} {
		if _, err := decodeQueryReply(b); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("decode %x…: %v, want ErrMalformed", b[:min(len(b), 8)], err)
		}
	}
}

func FuzzDecodeQueryReply(f *testing.F) {
	var r consensus.Round
	r.Participants = []string{"a", "b"}
	r.Receipts = []consensus.Receipt{{Member: "a"}}
	for _, rep := range []protocol.QueryReply{
		{Rounds: []consensus.Round{r}, Total: 3},
		{Members: []consensus.Member{{ID: "x", Contributors: []string{"c"}}}},
		{Status: &protocol.Status{ID: "c1", Servers: []protocol.ServerInfo{{ID: "c1", Addr: "a:1"}}}},
		{Ledger: &consensus.Ledger{Balances: []consensus.Balance{{Contributor: "a/b", Amount: 3}}}},
	} {
		b, err := transport.EncodePayload(&rep)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeQueryReply(b)
		if err != nil {
			return
		}
		if _, err := transport.EncodePayload(&r); err != nil {
			t.Fatalf("a decoded reply does not encode: %v", err)
		}
	})
}

// Pages of the ledger merge into one: payouts in order, each balance and pool once (the later
// page's reading winning), the later treasury.
func TestMergeLedgerPages(t *testing.T) {
	var l consensus.Ledger
	mergeLedger(&l, &consensus.Ledger{
		Payouts:  []consensus.Payout{{Cohort: 1, Round: 1, Contributor: "b", Data: 5}, {Cohort: 1, Round: 1, Contributor: "a", Data: 3}},
		Balances: []consensus.Balance{{Contributor: "a", Amount: 3}, {Contributor: "b", Amount: 5}},
		Pools:    []consensus.Pool{{Cohort: 1, Total: 100, Paid: 8}},
		Treasury: consensus.Treasury{Balance: 10}})
	mergeLedger(&l, &consensus.Ledger{
		Payouts:  []consensus.Payout{{Cohort: 2, Round: 1, Contributor: "c", Data: 1}, {Cohort: 1, Round: 2, Contributor: "b", Data: 2}},
		Balances: []consensus.Balance{{Contributor: "b", Amount: 7}, {Contributor: "c", Amount: 1}},
		Pools:    []consensus.Pool{{Cohort: 1, Total: 100, Paid: 10}, {Cohort: 2, Total: 50, Paid: 1}},
		Treasury: consensus.Treasury{Balance: 9}})
	want := consensus.Ledger{
		Payouts: []consensus.Payout{{Cohort: 1, Round: 1, Contributor: "b", Data: 5}, {Cohort: 1, Round: 1, Contributor: "a", Data: 3},
			{Cohort: 2, Round: 1, Contributor: "c", Data: 1}, {Cohort: 1, Round: 2, Contributor: "b", Data: 2}},
		Balances: []consensus.Balance{{Contributor: "a", Amount: 3}, {Contributor: "b", Amount: 7}, {Contributor: "c", Amount: 1}},
		Pools:    []consensus.Pool{{Cohort: 1, Total: 100, Paid: 10}, {Cohort: 2, Total: 50, Paid: 1}},
		Treasury: consensus.Treasury{Balance: 9}}
	if !reflect.DeepEqual(l, want) {
		t.Errorf("merged\n%+v\nwant\n%+v", l, want)
	}
}
