package transport_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cohortlab/cohort/transport"
)

// A coordinator serves a message type; a peer calls it and pushes a large blob.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	coordID, _ := transport.GenerateIdentity(rand.NewChaCha8([32]byte{1})) // crypto/rand.Reader in production
	peerID, _ := transport.GenerateIdentity(rand.NewChaCha8([32]byte{2}))

	received := make(chan int, 1)
	store := transport.NewStore(transport.StoreConfig{
		OnPush: func(peer transport.NodeID, tag string, root transport.Hash, data []byte) { received <- len(data) },
	})
	mux := transport.NewMux()
	store.Register(mux)
	mux.Handle("hello", func(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
		return transport.Message{Header: transport.Header{Type: "hello.reply"}, Payload: []byte("hi " + peer.String()[:8])}, nil
	}, transport.Limit{}) // "hello" carries no payload
	srv, err := transport.ListenAddr("127.0.0.1:0", transport.Config{
		Identity: coordID,
		Allow: func(id transport.NodeID) error { // only known peers
			if id != peerID.NodeID() {
				return fmt.Errorf("unknown node %s", id)
			}
			return nil
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	go srv.Serve(ctx, mux)

	conn, err := transport.Dial(ctx, srv.Addr().String(), transport.Config{Identity: peerID})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	fmt.Println("server is", conn.Peer() == coordID.NodeID())
	reply, err := transport.Call(ctx, conn, transport.Message{Header: transport.Header{Type: "hello", ID: 1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Payload))

	blob := make([]byte, 1<<20)
	m, _ := transport.NewManifest(blob, 0)
	if err := transport.Push(ctx, []*transport.Conn{conn}, "round 1 slice 0", blob, m, transport.TransferOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("pushed", <-received, "bytes in", len(m.Chunks), "chunks")
	// Output:
	// server is true
	// hi 27463a25
	// pushed 1048576 bytes in 16 chunks
}
