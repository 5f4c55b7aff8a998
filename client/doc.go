// Package client is a member's side of a coordinator cluster: one Client per member key signs
// consensus commands and has the cluster apply them exactly once, asks any coordinator for
// read-only state, and carries a peer's data-plane calls (uploads, aggregate long-polls, model
// blobs) over the same mutually authenticated QUIC connections.
//
//	cl, err := client.Dial(client.Config{Addrs: []string{"KEYID@10.0.0.1:7001"}, Identity: id})
//	defer cl.Close()
//	res, err := cl.Submit(ctx, &consensus.VoteBody{Proposal: 3, Yes: true})
//	switch {
//	case errors.Is(err, consensus.ErrDeadline): // the coordinators' verdict, matched by its wire code
//	case client.Retryable(err):                // no coordinator answered in time
//	}
//
// A Submit is retried, the same signed envelope with the same request ID, at coordinator after
// coordinator until one answers with the outcome: the state applies a request ID once, so a
// retry across a leader change never applies a command twice. Errors the coordinators answer with
// keep their wire code (internal/wirecode): they match the consensus and protocol sentinels with
// errors.Is, and nothing here reads error text.
//
// A KEYID@ address pins the node there to a key; every coordinator a status reply lists is pinned
// the same way, so one pinned address is enough to talk only to the cluster's own nodes.
package client
