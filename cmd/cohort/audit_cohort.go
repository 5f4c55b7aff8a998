package main

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/audit"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/peer"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// auditSimFlags are the settings of a simulated audit: a finished cohort's come from its proposal.
var auditSimFlags = []string{"peers", "partition", "label-noise", "trace", "model", "rounds", "inner-steps", "codec",
	"outer-lr", "outer-momentum", "ef-decay", "lr", "weight-decay", "warmup", "lr-schedule", "clip", "coordinators", "link"}

// runAuditCohort audits a finished cohort of the cluster at --coordinator: its proposal's
// settings, its contributors and the ledger's payouts from the cluster, the contributors' shards
// from --shards, the validation split from --data.
func runAuditCohort(c *cli.Context) error {
	began := time.Now()
	var set []string
	for _, f := range auditSimFlags {
		if c.IsSet(f) {
			set = append(set, "--"+f+fromEnv(f))
		}
	}
	if len(set) > 0 {
		return fmt.Errorf("audit: %s: a simulation's settings, but --coordinator%s audits a finished cohort with its proposal's own", strings.Join(set, ", "), fromEnv("coordinator"))
	}
	if err := checkFlags(c, "audit", batchBound("batch"), between("val-samples", 1, maxValSamples),
		between("permutations", 1, 1_000_000), between("tolerance", -1, 1)); err != nil {
		return err
	}
	id := c.Uint64("cohort")
	if id == 0 {
		return errors.New("audit: --coordinator needs --cohort ID (1 or more), the cohort to audit")
	}
	if c.String("shards") == "" {
		return errors.New("audit: --coordinator needs --shards: NAME=DIR,... or a directory with one sub-directory per contributor")
	}
	if _, _, err := auditMethod(c, "", 0, "contributors"); err != nil { // its spelling, before the cluster is asked
		return err
	}
	given, err := shardDirs(c.String("shards"))
	if err != nil {
		return fmt.Errorf("audit: --shards: %w", err)
	}
	rec, err := func() (cohortRecords, error) { // the retrainings are local: the client closes first
		cl, err := dialClient(c)
		if err != nil {
			return cohortRecords{}, err
		}
		defer cl.Close()
		return fetchRecords(c, cl, id, true)
	}()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	p := rec.proposal
	if rec.cohort.Status != consensus.CohortDone {
		return fmt.Errorf("audit: cohort %d is %s (round %d of %d): audit a finished cohort", id, rec.cohort.Status, rec.cohort.CurrentRound, spec.Fill(p.Params).Rounds)
	}
	var last consensus.Round // the last round: the final model, as the validator measured it
	for _, rd := range rec.rounds {
		if rd.Cohort != id {
			continue
		}
		if !rd.Scored && rd.Status == consensus.RoundClosed {
			slog.Warn("audit: a closed round of the cohort is unscored (not yet, or it could not be): nothing of it is in the ledger's shares", "cohort", id, "round", rd.Number)
		}
		if rd.Metrics.Measured && rd.Number > last.Number {
			last = rd
		}
	}
	players, err := auditPlayers(rec, given)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	method, utility, err := auditMethod(c, p.Model, len(players), "contributors")
	if err != nil {
		return err
	}
	t, err := spec.Of(p)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	val, err := cohortValidation(p, c.String("data"), c.Int("val-samples"))
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	sc := audit.ShardScenario{Model: p.Model, Batch: c.Int("batch"), Seed: t.Seed, Val: val, Params: p.Params}
	model, err := trainer.NewModel(p.Model, sc.Batch, t.Seed)
	if err != nil {
		return fmt.Errorf("audit: cohort %d trains %q: %w", id, p.Model, err)
	}
	if err := checkInitialModel(rec, model); err != nil {
		slog.Warn("audit: the retrainings do not start where the cohort did", "err", err)
	}
	seed := c.Uint64("seed")
	for _, pl := range players {
		// Each contributor's batch order is its own, seeded by its name: the same whoever else is
		// audited, and in a rerun of the same cohort by members of other keys.
		f := fnv.New64a()
		f.Write([]byte(consensus.ContributorName(pl.key)))
		name := f.Sum64()
		sh, err := loadAuditShard(model, pl, func(repeat int) uint64 {
			base := seed
			if repeat > 0 {
				base = audit.RepeatSeed(seed, repeat)
			}
			return base*1000003 + name
		})
		if err != nil {
			return fmt.Errorf("audit: --shards %s=%s: %w", pl.given, pl.dir, err)
		}
		sc.Shards = append(sc.Shards, sh)
	}
	r, err := audit.NewShardRetrainer(sc)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}

	h := spec.Fill(p.Params)
	out := auditSummary{
		Peers: len(players), Model: p.Model, Rounds: int(h.Rounds), InnerSteps: int(h.InnerSteps), Codec: r.Codec(), Seed: seed,
		Utility: utility, CohortID: id, Proposal: p.ID,
	}
	for _, pl := range rec.ledger.Pools {
		if pl.Cohort == id {
			out.Pool, out.RoundsScored = pl.Total, int(pl.RoundsPaid)
		}
	}
	if m := last.Metrics; m.Measured {
		out.Cohort = audit.Value{Loss: float64(m.ValLossMicro) / 1e6, Accuracy: float64(m.ValAccuracyBP) / 1e4}
	}
	jsonOut := c.Bool("json")
	bar := newProgressLine(errWriter(c), !jsonOut)
	start := time.Now()
	res, err := retrain(c, r, method, seed, bar)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	out.Method, out.Permutations, out.Truncated = string(res.Method), res.Permutations, res.Truncated
	out.Retrainings, out.Initial, out.Retrained = retrainings(res), res.Empty, res.Grand
	out.RetrainSeconds = time.Since(start).Seconds()
	out.WallSeconds = time.Since(began).Seconds()
	rows := make([]auditRow, len(players))
	for i, pl := range players {
		rows[i] = auditRow{Name: pl.shown, Member: pl.member, Payout: pl.payout}
		out.Paid += pl.payout
	}
	if err := compareAudit(&out, res, rows, r.ShardSizes()); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if jsonOut {
		return printJSON(c.App.Writer, out)
	}
	return printAudit(c.App.Writer, out)
}

// namedDir is one shard of --shards: the contributor's name (or ContributorKey) and its path.
type namedDir struct{ name, dir string }

// shardDirs reads --shards: NAME=DIR[,NAME=DIR...], or a directory whose sub-directories are the
// shards, each named as its contributor.
func shardDirs(s string) ([]namedDir, error) {
	if !strings.Contains(s, "=") {
		st, err := os.Stat(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s is neither a directory of shards nor NAME=DIR,...: %w", s, err)
		case !st.IsDir():
			return nil, fmt.Errorf("%s is a file: name its contributor, NAME=%s", s, s)
		}
		return shardSubdirs(s)
	}
	var out []namedDir
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, dir, ok := strings.Cut(strings.TrimSpace(part), "=")
		name, dir = strings.TrimSpace(name), strings.TrimSpace(dir)
		if !ok || name == "" || dir == "" {
			return nil, fmt.Errorf("%q: want NAME=DIR (a contributor's name and its shard)", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s is given twice", name)
		}
		seen[name] = true
		out = append(out, namedDir{name, dir})
	}
	return out, nil
}

// shardSubdirs lists the shards in dir: its sub-directories, by name.
func shardSubdirs(dir string) ([]namedDir, error) {
	if isShard(dir) {
		return nil, fmt.Errorf("%s is itself a shard: name its contributor, NAME=%s", dir, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []namedDir
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, namedDir{e.Name(), filepath.Join(dir, e.Name())})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no sub-directories: want one per contributor, named as the contributor", dir)
	}
	return out, nil
}

// isShard reports whether dir holds a shard itself: training images or .txt files.
func isShard(dir string) bool {
	if isTextData(dir) {
		return true
	}
	for _, f := range []string{"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// auditPlayer is a contributor of the cohort whose shard was given.
type auditPlayer struct {
	key, member string
	shown       string // its name, or its key where two members registered the name
	given, dir  string // as --shards named it
	fingerprint []byte // registered at join
	payout      uint64 // data + compute, all the cohort's rounds
}

// auditPlayers matches the given shards with the cohort's contributors (by name, or by key where
// a name is ambiguous): every contributor who trained or was paid must have one, and every shard
// must be a contributor's. The players are in join order.
func auditPlayers(rec cohortRecords, given []namedDir) ([]auditPlayer, error) {
	id := rec.cohort.ID
	type contributor struct {
		auditPlayer
		trained bool
	}
	var all []*contributor
	byKey := map[string]*contributor{}
	add := func(key, member string) *contributor {
		if x := byKey[key]; x != nil {
			return x
		}
		x := &contributor{auditPlayer: auditPlayer{key: key, member: member}}
		byKey[key] = x
		all = append(all, x)
		return x
	}
	trained := map[string]bool{} // members with a receipt
	for _, rd := range rec.rounds {
		if rd.Cohort == id {
			for _, rc := range rd.Receipts {
				trained[rc.Member] = true
			}
		}
	}
	for _, m := range rec.cohort.Members {
		for _, d := range m.Contributors {
			x := add(d.Name, m.Member)
			x.fingerprint = d.Fingerprint
			x.trained = trained[m.Member]
		}
	}
	for _, po := range rec.ledger.Payouts {
		if po.Cohort == id {
			member, _, _ := consensus.SplitContributorKey(po.Contributor)
			add(po.Contributor, member).payout += po.Data + po.Compute
		}
	}
	named := map[string][]*contributor{}
	for _, x := range all {
		n := consensus.ContributorName(x.key)
		named[n] = append(named[n], x)
	}
	for _, x := range all {
		x.shown = consensus.ContributorName(x.key)
		if len(named[x.shown]) > 1 {
			x.shown = x.key
		}
	}
	var names []string
	for _, x := range all {
		names = append(names, x.shown)
	}
	for _, g := range given {
		x := byKey[g.name]
		if x == nil {
			switch xs := named[g.name]; len(xs) {
			case 0:
				return nil, fmt.Errorf("--shards names %q, who is not a contributor of cohort %d (its contributors: %s)", g.name, id, strings.Join(names, ", "))
			case 1:
				x = xs[0]
			default:
				var keys []string
				for _, x := range xs {
					keys = append(keys, x.key)
				}
				return nil, fmt.Errorf("--shards names %q, the name of contributors of %d members of cohort %d: name it by its key, one of %s", g.name, len(xs), id, strings.Join(keys, ", "))
			}
		}
		if x.dir != "" {
			return nil, fmt.Errorf("--shards gives two shards for %s: %s and %s", x.shown, x.dir, g.dir)
		}
		x.given, x.dir = g.name, g.dir
	}
	var missing []string
	var players []auditPlayer
	for _, x := range all {
		switch {
		case x.dir != "":
			players = append(players, x.auditPlayer)
		case x.payout > 0:
			missing = append(missing, fmt.Sprintf("%s (paid %d)", x.shown, x.payout))
		case x.trained:
			missing = append(missing, fmt.Sprintf("%s (trained, paid nothing)", x.shown))
		default:
			slog.Info("audit: a contributor that neither trained nor was paid has no shard: left out", "contributor", x.shown, "cohort", id)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("--shards gives no shard for %s of cohort %d: every contributor who trained or was paid needs its own", strings.Join(missing, ", "), id)
	}
	if len(players) == 0 {
		return nil, fmt.Errorf("cohort %d has no contributors to audit", id)
	}
	if len(players) > audit.MaxPlayers {
		return nil, fmt.Errorf("cohort %d has %d contributors to audit, at most %d can be", id, len(players), audit.MaxPlayers)
	}
	return players, nil
}

// cohortValidation loads the split the cohort's coordinators validate on, as their validators
// do (trainer.ValidationFor of the proposal's model, from data; the character model's is the
// embedded play), and checks it against the hash the proposal recorded.
func cohortValidation(p consensus.Proposal, data string, samples int) (*trainer.Validation, error) {
	if p.Model == "charlm" {
		data = ""
	}
	val, err := trainer.ValidationFor(p.Model, data, samples)
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", data, err)
	}
	h := val.Hash()
	if len(p.ValidationHash) == 0 {
		slog.Warn("audit: the proposal recorded no validation hash: the coordinators' validation split cannot be checked against --data's",
			"proposal", p.ID, "data", data, "samples", val.Len(), "hash", fmt.Sprintf("%x", h[:8]))
		return val, nil
	}
	if !bytes.Equal(h[:], p.ValidationHash) {
		return nil, fmt.Errorf("--data %s, %d samples: its validation split %x is not the %x proposal %d validates on: give the coordinators' --data and --val-samples",
			data, val.Len(), h[:8], p.ValidationHash[:min(8, len(p.ValidationHash))], p.ID)
	}
	return val, nil
}

// checkInitialModel reports θ_0 (m, built from the proposal's seed) not being the model the
// cohort's first round started from: the retrainings would then not start where the cohort did.
func checkInitialModel(rec cohortRecords, m nn.Model) error {
	for _, rd := range rec.rounds {
		if rd.Cohort != rec.cohort.ID || rd.Number != 1 || len(rd.ModelHash) == 0 {
			continue
		}
		if h := protocol.HashParams(m.Params()); !bytes.Equal(h[:], rd.ModelHash) {
			return fmt.Errorf("θ_0 of proposal %d's seed, %x, is not the model %x the cohort's first round started from", rec.proposal.ID, h[:8], rd.ModelHash[:min(8, len(rd.ModelHash))])
		}
	}
	return nil
}

// loadAuditShard loads a player's shard as cohort join does (image directory, or text), checks
// that model takes it and that it is the data the contributor registered (its fingerprint), and
// returns it as the retrainings open it: a source seeded with seed(repeat).
func loadAuditShard(model nn.Model, pl auditPlayer, seed func(repeat int) uint64) (audit.Shard, error) {
	if isTextData(pl.dir) {
		docs, err := loadTexts(pl.dir)
		if err != nil {
			return audit.Shard{}, err
		}
		var text []byte
		for _, d := range docs {
			text = append(text, d.Text...)
		}
		if err := peer.TextFits(model, len(text)); err != nil {
			return audit.Shard{}, err
		}
		fp := datasets.TextFingerprint(docs)
		if err := sameData(pl, fp.Digest[:]); err != nil {
			return audit.Shard{}, err
		}
		context := model.(interface{ Context() int }).Context() // TextFits: a language model
		return audit.Shard{Name: pl.key, Size: len(text), Open: func(repeat int) (trainer.Source, error) {
			return trainer.NewByteSource(text, context, seed(repeat))
		}}, nil
	}
	imgs, err := datasets.LoadImages(os.DirFS(pl.dir), "train")
	if err != nil {
		return audit.Shard{}, err
	}
	if err := peer.ImagesFit(model, imgs); err != nil {
		return audit.Shard{}, fmt.Errorf("%s: %w", imagesFile(pl.dir), err)
	}
	idx := make([]int, imgs.Len())
	for j := range idx {
		idx[j] = j
	}
	fp := datasets.NewFingerprint(imgs.SampleHashes(idx))
	if err := sameData(pl, fp.Digest[:]); err != nil {
		return audit.Shard{}, err
	}
	return audit.Shard{Name: pl.key, Size: imgs.Len(), Open: func(repeat int) (trainer.Source, error) {
		return trainer.NewImageSource(imgs, idx, seed(repeat))
	}}, nil
}

// sameData checks a shard's fingerprint against the one its contributor registered at join.
func sameData(pl auditPlayer, fp []byte) error {
	if len(pl.fingerprint) == 0 || bytes.Equal(fp, pl.fingerprint) {
		return nil
	}
	return fmt.Errorf("its fingerprint %x is not the %x %s registered: not the data it trained the cohort on", fp[:8], pl.fingerprint[:min(8, len(pl.fingerprint))], pl.shown)
}
