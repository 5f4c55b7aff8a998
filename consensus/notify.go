package consensus

import "sync"

// notifier broadcasts "the state changed" to any number of waiters without polling: wait
// returns a channel that the next notify closes. The zero value is ready to use.
type notifier struct {
	mu sync.Mutex
	ch chan struct{} // nil until someone waits
}

// wait returns the channel the next notify closes.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// notify closes the channel of the current waiters; later waits get a new one.
func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// Changed returns a channel that is closed once the local state next changes: after the
// next batch of log entries is applied, or a snapshot restored. Take the channel before
// looking at the state (View), then wait on it: a change between the two still closes it.
//
//	for {
//		ch := node.Changed()
//		if done := node.View(check); done { break }
//		select { case <-ch: case <-ctx.Done(): return ctx.Err() }
//	}
func (n *Node) Changed() <-chan struct{} { return n.fsm.changed.wait() }
