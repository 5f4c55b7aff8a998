package pipeline

import (
	"context"
	"fmt"
	"sync"
)

// NewLocalGroup returns the links of a group of stages in one process: one per stage, each
// frame handed over through an unbounded in-order queue per pair of stages (Send never waits).
func NewLocalGroup(stages int) []Link {
	g := &localGroup{q: make([][]*frameQueue, stages)}
	for from := range g.q {
		g.q[from] = make([]*frameQueue, stages)
		for to := range g.q[from] {
			g.q[from][to] = newFrameQueue()
		}
	}
	links := make([]Link, stages)
	for s := range links {
		links[s] = &localLink{g: g, self: s}
	}
	return links
}

type localGroup struct{ q [][]*frameQueue } // q[from][to]

type localLink struct {
	g    *localGroup
	self int
}

func (l *localLink) peer(s int) error {
	if s < 0 || s >= len(l.g.q) || s == l.self {
		return fmt.Errorf("%w: stage %d has no link to stage %d in a group of %d", ErrConfig, l.self, s, len(l.g.q))
	}
	return nil
}

func (l *localLink) Send(ctx context.Context, to int, f Frame) error {
	if err := l.peer(to); err != nil {
		return err
	}
	l.g.q[l.self][to].push(f)
	return nil
}

func (l *localLink) Recv(ctx context.Context, from int) (Frame, error) {
	if err := l.peer(from); err != nil {
		return Frame{}, err
	}
	return l.g.q[from][l.self].pop(ctx)
}

// frameQueue is an unbounded FIFO of frames with a context-aware pop.
type frameQueue struct {
	mu    sync.Mutex
	items []Frame
	ready chan struct{} // holds a token while items may be non-empty
	err   error         // set by fail: every later pop returns it once the queue is empty
}

func newFrameQueue() *frameQueue { return &frameQueue{ready: make(chan struct{}, 1)} }

func (q *frameQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *frameQueue) push(f Frame) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	q.signal()
}

// fail makes pops return err once the queued frames are taken.
func (q *frameQueue) fail(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	q.signal()
}

func (q *frameQueue) pop(ctx context.Context) (Frame, error) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			f := q.items[0]
			q.items[0] = Frame{}
			q.items = q.items[1:]
			more := len(q.items) > 0
			q.mu.Unlock()
			if more {
				q.signal()
			}
			return f, nil
		}
		if err := q.err; err != nil {
			q.mu.Unlock()
			q.signal()
			return Frame{}, err
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return Frame{}, ctx.Err()
		}
	}
}
