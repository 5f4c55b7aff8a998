package consensus

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// A page of the ledger carries its payouts and only the balances and pools they name, so a reply
// does not grow with the ledger; the pages of every cohort, and of one cohort, put together are
// the whole ledger's payouts in order; a snapshot's restore rebuilds the per-cohort index.
func TestLedgerPages(t *testing.T) {
	s := applyAll(t, scenario(t, 3, 12, 4))
	whole := s.Ledger()
	if len(whole.Payouts) < 20 {
		t.Fatalf("the scenario paid %d payouts: too few to page", len(whole.Payouts))
	}
	restored := func() *State {
		b, err := s.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		r, err := UnmarshalSnapshot(b)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}()
	for _, st := range []*State{s, restored} {
		for _, cohort := range []uint64{0, 1} {
			if n := st.NumPayouts(cohort); n != len(whole.Payouts) {
				t.Fatalf("cohort %d: %d payouts, want %d", cohort, n, len(whole.Payouts))
			}
			var got []Payout
			for lo := 0; lo < st.NumPayouts(cohort); lo += 7 {
				p := st.LedgerPage(cohort, lo, lo+7)
				got = append(got, p.Payouts...)
				named := map[string]bool{}
				for _, po := range p.Payouts {
					named[po.Contributor] = true
				}
				if len(p.Balances) != len(named) || !slices.IsSortedFunc(p.Balances, func(a, b Balance) int { return strings.Compare(a.Contributor, b.Contributor) }) {
					t.Fatalf("page at %d: %d balances for %d contributors named", lo, len(p.Balances), len(named))
				}
				for _, b := range p.Balances {
					if !named[b.Contributor] || b.Amount != st.Balance(b.Contributor) {
						t.Errorf("page at %d: balance %+v", lo, b)
					}
				}
				if len(p.Pools) != 1 || p.Pools[0] != whole.Pools[0] || p.Treasury != whole.Treasury {
					t.Errorf("page at %d: pools %+v treasury %+v", lo, p.Pools, p.Treasury)
				}
			}
			if !reflect.DeepEqual(got, whole.Payouts) {
				t.Errorf("cohort %d: the pages' payouts are not the ledger's", cohort)
			}
		}
		if p := st.LedgerPage(2, 0, 10); len(p.Payouts) != 0 || len(p.Pools) != 0 || st.NumPayouts(2) != 0 {
			t.Errorf("a cohort with no payouts: %+v", p)
		}
		if p := st.LedgerPage(1, 1000, 2000); len(p.Payouts) != 0 || len(p.Pools) != 1 {
			t.Errorf("a page past the end holds %d payouts and %d pools, want none and the cohort's pool", len(p.Payouts), len(p.Pools))
		}

		var all []Balance
		for lo := 0; lo < st.NumBalances(); lo += 5 {
			all = append(all, st.BalancesRange(lo, lo+5)...)
		}
		if !reflect.DeepEqual(all, whole.Balances) || len(all) != st.NumBalances() {
			t.Errorf("balance pages: %d of %d, equal %v", len(all), len(whole.Balances), reflect.DeepEqual(all, whole.Balances))
		}
		if ps := st.Pools(); !reflect.DeepEqual(ps, whole.Pools) {
			t.Errorf("Pools() = %+v, want %+v", ps, whole.Pools)
		}
	}

	m := testID("s3-m4")
	bs, err := s.MemberBalances(m)
	if err != nil {
		t.Fatal(err)
	}
	want := []Balance{{Contributor: ContributorKey(m, "s3-m4/a"), Amount: s.Balance(ContributorKey(m, "s3-m4/a"))},
		{Contributor: ContributorKey(m, "s3-m4/b"), Amount: s.Balance(ContributorKey(m, "s3-m4/b"))}}
	if !reflect.DeepEqual(bs, want) || want[1].Amount == 0 {
		t.Errorf("MemberBalances = %+v, want %+v", bs, want)
	}
	if _, err := s.MemberBalances("nobody"); err == nil {
		t.Error("an unknown member's balances: no error")
	}
}
