package audit

import (
	"context"
	"errors"
	"testing"

	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// shardScenario is tinyScenario's cohort with its shards given: the partition's shards, each
// source seeded as trainer.BuildTask seeds it, validated on the same split.
func shardScenario(t *testing.T) ShardScenario {
	t.Helper()
	sc := tinyScenario()
	_, info, err := trainer.BuildTask(sc.Task)
	if err != nil {
		t.Fatal(err)
	}
	train, _, _, err := trainer.LoadFashionMNIST(sc.Task.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	val, err := trainer.ValidationFor(sc.Task.Model, sc.Task.DataDir, sc.Task.ValSamples)
	if err != nil {
		t.Fatal(err)
	}
	out := ShardScenario{Model: sc.Task.Model, Seed: sc.Task.Seed, Val: val, Params: sc.Params}
	for i, idx := range info.Shards {
		out.Shards = append(out.Shards, Shard{Name: string(rune('a' + i)), Size: len(idx), Open: func(repeat int) (trainer.Source, error) {
			base := sc.Task.Seed
			if repeat > 0 {
				base = RepeatSeed(sc.Task.Seed, repeat)
			}
			return trainer.NewImageSource(train, idx, base*1000003+uint64(i)+1)
		}})
	}
	return out
}

// The same shards, sources and validation split given explicitly retrain to the same values as
// the scenario that partitions them: θ_0, every coalition of two, and the whole cohort.
func TestShardRetrainerMatchesPartition(t *testing.T) {
	bg := context.Background()
	want, err := NewRetrainer(tinyScenario())
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewShardRetrainer(shardScenario(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.Players() != 3 || got.Codec() != want.Codec() {
		t.Fatalf("players %d, codec %q; want 3, %q", got.Players(), got.Codec(), want.Codec())
	}
	for i, s := range got.ShardSizes() {
		if s != want.ShardSizes()[i] {
			t.Fatalf("shard sizes %v, want %v", got.ShardSizes(), want.ShardSizes())
		}
	}
	for _, c := range []Coalition{0, 0b011, 0b101, 0b110, All(3)} {
		a, err := want.Value(bg, c)
		if err != nil {
			t.Fatal(err)
		}
		b, err := got.Value(bg, c)
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Errorf("coalition %03b: given shards %+v, partition %+v", uint64(c), b, a)
		}
	}
	// A coalition retrained again opens fresh sources: the same value.
	a, _ := got.Value(bg, 0b101)
	b, _ := got.Value(bg, 0b101)
	if a != b {
		t.Errorf("coalition {0,2} twice: %+v, then %+v", a, b)
	}
	if _, err := got.Value(bg, 1<<3); !errors.Is(err, ErrPlayers) {
		t.Errorf("coalition beyond the players: %v", err)
	}
	// Another repeat draws other batches, the same in both retrainers; repeat 0 is Value.
	for _, k := range []int{0, 1, 2} {
		a, err := want.Repeat(k)(bg, All(3))
		if err != nil {
			t.Fatal(err)
		}
		b, err := got.Repeat(k)(bg, All(3))
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Errorf("repeat %d: given shards %+v, partition %+v", k, b, a)
		}
		if v, _ := want.Value(bg, All(3)); (k == 0) != (v == a) {
			t.Errorf("repeat %d of everyone %+v, Value %+v: want equal only for repeat 0", k, a, v)
		}
	}
}

// emptySource is a shard with nothing in it.
type emptySource struct{}

func (emptySource) Next(*nn.Batch, int) {}
func (emptySource) Len() int            { return 0 }

func TestShardScenarioRefused(t *testing.T) {
	base := shardScenario(t)
	for _, c := range []struct {
		name string
		edit func(*ShardScenario)
		want error
	}{
		{"no shards", func(s *ShardScenario) { s.Shards = nil }, ErrPlayers},
		{"65 shards", func(s *ShardScenario) {
			for len(s.Shards) < 65 {
				s.Shards = append(s.Shards, Shard{Name: string(rune('A' + len(s.Shards))), Open: s.Shards[0].Open})
			}
		}, ErrPlayers},
		{"two shards of one name", func(s *ShardScenario) { s.Shards[1].Name = s.Shards[0].Name }, ErrScenario},
		{"unnamed shard", func(s *ShardScenario) { s.Shards[2].Name = "" }, ErrScenario},
		{"no source", func(s *ShardScenario) { s.Shards[0].Open = nil }, ErrScenario},
		{"unreadable shard", func(s *ShardScenario) {
			s.Shards[1].Open = func(int) (trainer.Source, error) { return nil, errors.New("gone") }
		}, ErrScenario},
		{"empty shard", func(s *ShardScenario) {
			s.Shards[1].Open = func(int) (trainer.Source, error) { return emptySource{}, nil }
		}, ErrScenario},
		{"no validation split", func(s *ShardScenario) { s.Val = nil }, ErrScenario},
		{"unknown model", func(s *ShardScenario) { s.Model = "resnet" }, ErrScenario},
		{"unknown codec", func(s *ShardScenario) { s.Params.Codec = "gzip" }, ErrScenario},
		{"negative batch", func(s *ShardScenario) { s.Batch = -1 }, ErrScenario},
		{"negative parallel", func(s *ShardScenario) { s.Parallel = -1 }, ErrScenario},
	} {
		t.Run(c.name, func(t *testing.T) {
			sc := base
			sc.Shards = append([]Shard(nil), base.Shards...)
			c.edit(&sc)
			if _, err := NewShardRetrainer(sc); !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}
