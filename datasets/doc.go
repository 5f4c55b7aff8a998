// Package datasets loads the data Cohort trains on, splits it among peers and
// fingerprints what each peer holds. It knows nothing of training and imports
// no other project package.
//
// # Data
//
// Images come in the IDX format of MNIST and Fashion-MNIST, raw or gzip
// (detected by content), read through fs.FS so tests use fstest.MapFS:
//
//	train, test, source, err := datasets.FashionMNIST("") // system copy, else embedded subset
//	x := train.AppendFeatures(buf[:0], batch)             // len(batch)*784 floats in [0,1]
//	y := train.AppendLabels(ys[:0], batch)
//
// The package embeds real data so that everything runs offline: the first
// 6,000 training and 1,000 test images of Fashion-MNIST (MIT, Zalando SE;
// data/fashion-mnist/LICENSE) and Shakespeare's As You Like It (public domain,
// from the Canterbury corpus). Text is parsed into speeches, each with its
// speaker, so it can be split "naturally" by speaker:
//
//	play, err := datasets.EmbeddedPlay()
//	vocab := datasets.NewVocab(play.Text())
//	ids := vocab.Encode(play.Speeches[0].Text)
//
// A contributor's text is a UTF-8 file or a directory of .txt files, each a
// Document that keeps its name; Tiny Shakespeare's "NAME:" layout parses
// into speeches like the embedded play:
//
//	docs, err := datasets.LoadTexts(os.DirFS(dir), "input.txt")
//	train, val, err := datasets.SplitText([]byte(docs[0].Text), 0.9) // nanoGPT's split
//
// Every decoder of bytes (ReadIDX, LoadImages, ParsePlay, LoadText,
// LoadTexts, ParseSpeakerText,
// Fingerprint.UnmarshalBinary) returns an error wrapping ErrMalformed,
// ErrTruncated, ErrTooLarge or ErrNotFound and naming the file and what is
// wrong; none panics on bad input, and none allocates more than the input
// justifies (declared sizes are checked against the bytes present).
//
// # Partitions
//
// Partitioners are pure functions of their inputs and an explicit seed (a
// math/rand/v2 PCG; no global randomness). Each returns k parts of sample
// indices, disjoint and together covering every sample, each part sorted
// ascending:
//
//	p, err := datasets.ParsePartition("dirichlet:0.5") // or "iid", "natural"
//	parts, err := p.Split(datasets.Samples{Labels: train.IntLabels(), Classes: 10}, peers, seed)
//
// Text is split with a TextPartition: "iid" (lines, or "iid:CHUNK" bytes,
// dealt by a seeded permutation), "contiguous" (k consecutive runs cut at
// line boundaries), "speaker" or "play" (each speaker's speeches, or each
// document, whole to one part):
//
//	tp, err := datasets.ParseTextPartition("speaker")
//	shards, err := tp.Split(docs, peers, seed) // shards[j]: peer j's documents
//
// A peer's shard is written with WriteImages (or Play.Subset + WritePlay)
// and read back with LoadImages (or ParsePlay);
// a Batcher deals its indices in seeded, resumable mini-batches:
//
//	b, err := datasets.NewBatcher(parts[me], 64, seed)
//	batch = b.Next(batch[:0])
//
// # Fingerprints
//
// A sample hashes to SHA-256 of a canonical encoding (an image: its label
// byte then its pixels; text: its bytes). A shard's Fingerprint is
// independent of sample order and names: a hash of the sorted sample hashes
// plus a 128-slot MinHash sketch, so the coordinator can estimate how much
// two shards overlap (Overlap, a Jaccard estimate) without seeing the data.
// A text shard's samples are its shingles (runs of ShingleWords normalised
// words), so TextFingerprint finds copied or overlapping passages even when
// the text is re-wrapped or cut differently.
package datasets
