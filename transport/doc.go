// Package transport is Cohort's QUIC plumbing, shared by the coordinator and the peers.
// It is the only package that imports quic-go, and it imports no other Cohort package
// (TestImportFence checks both rules for its own files).
//
// # Identities and mutual TLS
//
// A node is an ed25519 key (Identity; GenerateIdentity, LoadKey, SaveKey,
// LoadOrCreateKey). Its NodeID is the first 16 bytes of SHA-256 of the public key. The
// key signs a self-signed X.509 certificate that is a pure function of the key, and both
// ends of every connection present theirs (TLS 1.3, ALPN "cohort/1"). The verifier
// accepts exactly one self-signed ed25519 certificate; validity dates are ignored (the key
// is the identity). Who may talk to whom is the application's decision: Config.Allow sees
// the peer's NodeID during the handshake, and Conn.Peer / Conn.PeerKey expose it after.
//
// # Endpoints
//
// An Endpoint is one net.PacketConn (a UDP socket, or a linkshape.Conn for slow links)
// carrying any number of QUIC connections, dialled or accepted:
//
//	id, err := transport.LoadOrCreateKey("node.key", crypto/rand.Reader)
//	ep, err := transport.ListenAddr("0.0.0.0:7001", transport.Config{Identity: id})
//	mux := transport.NewMux()
//	mux.Handle("round.upload", func(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
//		var h UploadHeader
//		if err := req.DecodeBody(&h); err != nil { return transport.Message{}, err }
//		... req.Payload holds the raw bytes ...
//		return transport.Message{Header: transport.Header{Type: "round.upload.ok"}}, nil
//	}, transport.Limit{MaxPayload: 16 << 20})
//	go ep.Serve(ctx, mux)
//
//	conn, err := transport.Dial(ctx, "10.0.0.1:7001", transport.Config{Identity: id})
//	reply, err := transport.Call(ctx, conn, transport.Message{Header: hdr, Payload: blob})
//
// # Messages
//
// One request and one reply per QUIC stream. A frame is "CH", a version byte, a uint32
// header length, a msgpack header (type, request id, payload length, CRC32C of the
// payload, error text and code, application body as msgpack bytes) and then the payload as raw
// bytes: tensors are never encoded element by element. A reply's error code is the wire code of
// the sentinel its handler wrapped (internal/wirecode): the caller's RemoteError matches that
// sentinel with errors.Is, so no caller reads error text. ReadMessage caps the header at
// MaxHeaderSize and the payload at a caller-given limit, checks every length before
// allocating (a payload grows as its bytes arrive), and reports truncated, oversized,
// corrupt or foreign frames with sentinel errors (ErrTruncated, ErrHeaderTooLarge,
// ErrPayloadTooLarge, ErrChecksum, ErrMalformedHeader, ErrBadMagic). QUIC already
// authenticates every packet; the CRC catches bugs above it (a payload cut or reused).
//
// # What a peer can cost a server
//
// Any key may connect, so Serve answers a stream from its header: a Router (a Mux, whose
// types are registered with a Limit) names the handler and the payload the request may
// carry before any payload byte is read; an unknown type or a payload above the limit is
// answered with the reason at once, its payload never read (Call returns that reply though
// its write was cut). An endpoint holds at most MaxConnsPerKey connections per peer key and
// MaxConnsPerSource per source address (SourceOf), closing further ones at accept with
// CodeConnLimit; a connection has at most MaxIncomingStreams streams open and
// MaxConcurrentRequests served at once (by default the same, so none waits unread), and the
// endpoint at most MaxServing over all connections and MaxServingPerSource from one source
// (beyond them a request gets ErrBusy, unread);
// a request's header must arrive within RequestTimeout and its payload, like the reply, at
// MinRate, or it is answered with ErrTooSlow. What a peer has sent and the server has not
// consumed yet (streams not read yet, refused ones the peer has not reset) is bounded by the
// connections' receive windows, and auto-tuning grows those only while one key's connections
// hold at most MaxWindowPerKey together. Refused tells the application of each refusal.
//
// # Large transfers
//
// A blob is cut into chunks (DefaultChunkSize), each named by its SHA-256; a Manifest
// (size, chunk size, hashes) is named by its Root. A receiver's Assembly verifies every
// chunk on arrival and knows what it misses, so a transfer resumes with only the missing
// chunks: Fetch (pull from a Store that Put the blob) and Push (offer a manifest; the
// receiver's Store answers with the chunks it holds, the sender sends the rest, and
// StoreConfig.OnPush gets the verified blob). Both stripe the chunks over several QUIC
// connections, PerConn requests in flight on each, and in the endgame re-request the
// last chunks still in flight on an idle connection.
//
// Why stripe: quic-go v0.65 uses NewReno congestion control, which cuts its window on
// every loss. With 1 % random loss and a 100 ms RTT one connection reaches about a fifth
// of a 10 Mbit/s link; several connections over the same socket share the link and keep
// it full. BenchmarkStripedGoodput (8 MB, link shaped 10mbit,50ms,1% on both endpoints,
// goodput over the raw link rate, which counts IPv4+UDP headers):
//
//	connections    1          4          8          16         32
//	link-util      0.13–0.21  0.68–0.81  0.88–0.91  0.85–0.89  0.86–0.88
//	wire/payload   1.08       1.09       1.12       1.25       1.53
//
// At 8 connections the link is busy nearly all the time; what is left is per-packet
// overhead (QUIC and IP/UDP headers, ~5 %) and retransmissions of packets the 100 ms
// queue dropped while the stripes probe for bandwidth (~3.5 %) or the link lost (1 %).
// More stripes only overflow the queue more. DialStripes opens DefaultStripes (8).
//
// Why 64 KiB chunks: a chunk is the unit of striping, so the transfer's tail lasts about
// as long as the slowest stripe needs for its last chunks. With 8 connections, 64 KiB
// chunks reached 0.88–0.91 of the link rate and 256 KiB chunks 0.72–0.88. The cost is a
// 32-byte hash and a ~60-byte request header per 64 KiB.
//
// Figures depend on the machine being idle enough for the shaper's timers: on this
// shared 2-core machine an overloaded moment cost single runs up to 40 %.
package transport
