package quiclink

import (
	"context"
	"errors"
	"hash"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/pipeline"
	"github.com/cohortlab/cohort/transport"
)

var tiny = nn.GPTConfig{Layers: 3, Embed: 32, Heads: 2, Context: 16, Vocab: 64, Batch: 2, Seed: 3}

func newStages(t testing.TB, S int, pc pipeline.Config) []*pipeline.Stage {
	t.Helper()
	specs, err := nn.SplitStages(tiny.Layers, S)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*pipeline.Stage, S)
	for s, spec := range specs {
		m, err := nn.NewGPTStage(tiny, spec)
		if err != nil {
			t.Fatal(err)
		}
		if out[s], err = pipeline.NewStage(m, pc); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// group is S endpoints on loopback with their identities, admitting only each other.
func group(t testing.TB, S int) ([]*transport.Endpoint, []Peer) {
	t.Helper()
	ids := make([]*transport.Identity, S)
	allowed := map[transport.NodeID]bool{}
	for s := range ids {
		id, err := transport.GenerateIdentity(rand.NewChaCha8([32]byte{byte(s + 1)}))
		if err != nil {
			t.Fatal(err)
		}
		ids[s] = id
		allowed[id.NodeID()] = true
	}
	allow := func(id transport.NodeID) error {
		if !allowed[id] {
			return errors.New("not a stage of this group")
		}
		return nil
	}
	eps := make([]*transport.Endpoint, S)
	peers := make([]Peer, S)
	for s := range eps {
		ep, err := transport.ListenAddr("127.0.0.1:0", transport.Config{Identity: ids[s], Allow: allow})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		eps[s] = ep
		peers[s] = Peer{ID: ids[s].NodeID(), Addr: ep.Addr().String()}
	}
	return eps, peers
}

// connectAll links every stage of the group at once.
func connectAll(t testing.TB, eps []*transport.Endpoint, peers []Peer, maxFrame int) []*Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	links := make([]*Link, len(eps))
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for s := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			links[s], errs[s] = Connect(ctx, Config{Self: s, Endpoint: eps[s], Peers: peers, MaxFrame: maxFrame})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		t.Cleanup(func() { l.Close() })
	}
	return links
}

// train runs steps steps of every stage over links and returns each stage's stats per step.
func train(t testing.TB, stages []*pipeline.Stage, links []pipeline.Link, batches []nn.Batch) [][]pipeline.StepStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stats := make([][]pipeline.StepStats, len(stages))
	errs := make([]error, len(stages))
	var wg sync.WaitGroup
	for s := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, b := range batches {
				st, err := stages[s].Step(ctx, links[s], k, b)
				if err != nil {
					errs[s] = err
					cancel()
					return
				}
				stats[s] = append(stats[s], st)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return stats
}

func batches(n, seqs int) []nn.Batch {
	r := rand.New(rand.NewPCG(4, 4))
	out := make([]nn.Batch, n)
	for k := range out {
		N := seqs * tiny.Context
		out[k] = nn.Batch{Tokens: make([]int, N), Y: make([]int, N)}
		for i := range out[k].Tokens {
			out[k].Tokens[i] = r.IntN(tiny.Vocab)
			out[k].Y[i] = r.IntN(tiny.Vocab)
		}
	}
	return out
}

// recorder hashes every frame a stage sends (its destination and wire form) on the way to its link.
type recorder struct {
	pipeline.Link
	h      hash.Hash64
	frames int
}

func record(l pipeline.Link) *recorder { return &recorder{Link: l, h: fnv.New64a()} }

func (r *recorder) Send(ctx context.Context, to int, f pipeline.Frame) error {
	r.h.Write([]byte{byte(to)})
	r.h.Write(f.AppendBinary(nil))
	r.frames++
	return r.Link.Send(ctx, to, f)
}

// TestQUICMatchesInProcess: stages in one process over real QUIC on loopback train to the same
// bits, with the same frames, as over in-process links.
func TestQUICMatchesInProcess(t *testing.T) {
	for _, tc := range []struct {
		S     int
		codec string
	}{{2, "fp32"}, {3, "q8"}} {
		pc := pipeline.Config{Micro: 2, Codec: compress.MustParse(tc.codec), AdamW: trainer.AdamWConfig{LR: 1e-3, ClipNorm: 1}}
		bs := batches(3, 2*tiny.Batch)

		local := newStages(t, tc.S, pc)
		localLinks := make([]pipeline.Link, tc.S)
		localRec := make([]*recorder, tc.S)
		for s, l := range pipeline.NewLocalGroup(tc.S) {
			localRec[s] = record(l)
			localLinks[s] = localRec[s]
		}
		wantStats := train(t, local, localLinks, bs)

		remote := newStages(t, tc.S, pc)
		eps, peers := group(t, tc.S)
		qlinks := connectAll(t, eps, peers, remote[0].Codecs().MaxFrame())
		links := make([]pipeline.Link, tc.S)
		quicRec := make([]*recorder, tc.S)
		for s := range links {
			quicRec[s] = record(qlinks[s])
			links[s] = quicRec[s]
		}
		gotStats := train(t, remote, links, bs)

		for s := range local {
			if w, g := localRec[s], quicRec[s]; w.frames != g.frames || w.h.Sum64() != g.h.Sum64() {
				t.Errorf("S=%d %s stage %d: sent %d frames (hash %x) over QUIC, %d (hash %x) in process", tc.S, tc.codec, s, g.frames, g.h.Sum64(), w.frames, w.h.Sum64())
			}
			a, b := local[s].Model().Params(), remote[s].Model().Params()
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("S=%d %s stage %d: parameter %d is %v over QUIC, %v in process", tc.S, tc.codec, s, i, b[i], a[i])
				}
			}
			for k := range wantStats[s] {
				w, g := wantStats[s][k], gotStats[s][k]
				if w.Sent != g.Sent || w.Received != g.Received || w.Loss != g.Loss || w.GradNorm != g.GradNorm {
					t.Errorf("S=%d stage %d step %d: over QUIC %+v, in process %+v", tc.S, s, k, g, w)
				}
			}
			st := qlinks[s].Stats()
			t.Logf("S=%d %s stage %d: frames sent %d B (stream bytes %d), loss %v", tc.S, tc.codec, s, gotStats[s][0].SentBytes(), st.StreamBytesSent, gotStats[s][len(bs)-1].Loss)
		}
	}
}

// TestQUICMalformedFrames: what a peer sends that is not a frame of the group's shape is a clear
// error from Recv, not a panic or an allocation of what the peer claims.
func TestQUICMalformedFrames(t *testing.T) {
	const maxFrame = 4096
	for _, tc := range []struct {
		name string
		send func(s *transport.Stream) error
		want error
	}{
		{"oversized", func(s *transport.Stream) error {
			return transport.WriteMessage(s, transport.Header{Type: frameType}, make([]byte, maxFrame+1))
		}, transport.ErrPayloadTooLarge},
		{"not a frame type", func(s *transport.Stream) error {
			return transport.WriteMessage(s, transport.Header{Type: "round.upload"}, []byte{1})
		}, pipeline.ErrFrame},
		{"unknown kind", func(s *transport.Stream) error {
			return transport.WriteMessage(s, transport.Header{Type: frameType}, make([]byte, 20))
		}, pipeline.ErrFrame},
		{"short frame", func(s *transport.Stream) error {
			return transport.WriteMessage(s, transport.Header{Type: frameType}, []byte{1, 0, 0})
		}, pipeline.ErrFrame},
		{"garbage bytes", func(s *transport.Stream) error {
			_, err := s.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			return err
		}, pipeline.ErrFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps, peers := group(t, 2)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// Stage 0 is hand-written: it dials stage 1, says hello, then sends tc's bytes.
			done := make(chan error, 1)
			go func() {
				conn, err := eps[0].DialNode(ctx, peers[1].Addr, peers[1].ID)
				if err != nil {
					done <- err
					return
				}
				s, err := conn.OpenStream(ctx)
				if err != nil {
					done <- err
					return
				}
				var h transport.Header
				h.Type = helloType
				if err := h.SetBody(hello{Stage: 0}); err != nil {
					done <- err
					return
				}
				if err := transport.WriteMessage(s, h, nil); err != nil {
					done <- err
					return
				}
				done <- tc.send(s)
			}()
			l, err := Connect(ctx, Config{Self: 1, Endpoint: eps[1], Peers: peers, MaxFrame: maxFrame})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			// The sender's own write may fail: stage 1 refuses an oversized frame from its header and
			// cancels the stream while the payload is still going out. What stage 1 reports is the test.
			if err := <-done; err != nil {
				t.Logf("sender: %v", err)
			}
			_, err = l.Recv(ctx, 0)
			if !errors.Is(err, tc.want) || !errors.Is(err, pipeline.ErrFrame) {
				t.Errorf("Recv: %v, want %v (and pipeline.ErrFrame)", err, tc.want)
			}
		})
	}
}

func TestNeighbours(t *testing.T) {
	for _, tc := range []struct {
		self, S int
		want    []int
	}{
		{0, 1, nil}, {0, 2, []int{1}}, {1, 2, []int{0}},
		{0, 3, []int{1, 2}}, {1, 3, []int{0, 2}}, {2, 3, []int{1, 0}},
		{0, 4, []int{1, 3}}, {1, 4, []int{0, 2}}, {3, 4, []int{2, 0}},
	} {
		got := Neighbours(tc.self, tc.S)
		if len(got) != len(tc.want) {
			t.Errorf("Neighbours(%d, %d) = %v, want %v", tc.self, tc.S, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("Neighbours(%d, %d) = %v, want %v", tc.self, tc.S, got, tc.want)
			}
		}
	}
}
