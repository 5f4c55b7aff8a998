package consensus

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/hdevalence/ed25519consensus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/cohortlab/cohort/internal/msgcheck"
)

// Version is the envelope and log-entry format version this code writes and accepts.
const Version uint16 = 4

// Limits on decoded commands. They bound the memory one command can make the state hold.
const (
	MaxCommandBytes = 1 << 20 // one encoded Command (log entry)
	MaxNameLen      = 256     // model spec, dataset ref, codec, fixed-point strings, notes
	MaxShortNameLen = 64      // member, contributor, proposal and coordinator names (checkPrintable)
	MaxHashLen      = 64      // model hashes, validation-set hash, data fingerprints
	MaxListLen      = 4096    // contributors, participants, slices, weights in one command
)

// signingDomain prefixes the bytes a signature covers, so a command signature can never be
// replayed as a signature over some other kind of message.
const signingDomain = "cohort/consensus/command/v1\x00"

// CommandType names the kind of a command; it selects the Body type.
type CommandType uint8

// Command types. Coordinator commands are issued (signed) by a coordinator node key registered in
// the state; member commands by a registered member key (Register by the key it registers).
const (
	CmdAddCoordinator     CommandType = 1 + iota // self-signed by the key it adds, once approved
	CmdRegister                                  // member, self-signed by the key it registers
	CmdPropose                                   // member
	CmdVote                                      // member
	CmdTally                                     // coordinator (the leader)
	CmdJoin                                      // member
	CmdOpenRound                                 // coordinator (the leader)
	CmdReceipt                                   // member
	CmdScoreCommit                               // coordinator (the leader)
	CmdCloseRound                                // coordinator (the leader)
	CmdReassign                                  // coordinator (the leader)
	CmdExtendRound                               // coordinator (the leader)
	CmdSetLimits                                 // operator
	CmdFund                                      // operator
	CmdGrant                                     // operator
	CmdApproveCoordinator                        // operator
	cmdEnd
)

var cmdNames = [...]string{"", "add-coordinator", "register", "propose", "vote", "tally", "join",
	"open-round", "receipt", "score-commit", "close-round", "reassign", "extend-round", "set-limits",
	"fund", "grant", "approve-coordinator"}

func (t CommandType) String() string {
	if t > 0 && t < cmdEnd {
		return cmdNames[t]
	}
	return fmt.Sprintf("command(%d)", uint8(t))
}

// coordinatorOnly reports whether t must be issued by a registered coordinator node key.
func (t CommandType) coordinatorOnly() bool {
	return t.leaderOnly() || t.operator()
}

// leaderOnly reports whether t must be issued by the key of the leader that appends it: the
// commands that drive proposals and rounds and pay out the ledger.
func (t CommandType) leaderOnly() bool {
	switch t {
	case CmdTally, CmdOpenRound, CmdScoreCommit, CmdCloseRound, CmdReassign, CmdExtendRound:
		return true
	}
	return false
}

// operator reports whether t is an operator command: a decision of the cluster's operators (who
// the coordinators are, limits, the treasury, granted vote weight) rather than a step of the
// protocol. It is issued by registered coordinator keys and applied once a majority of them have
// issued the same body (see operators.go).
func (t CommandType) operator() bool {
	switch t {
	case CmdSetLimits, CmdFund, CmdGrant, CmdApproveCoordinator:
		return true
	}
	return false
}

// IsOperator reports whether t is an operator command (see the command list).
func (t CommandType) IsOperator() bool { return t.operator() }

// IDOf returns the node/member ID of a public key: hex of the first 16 bytes of its SHA-256.
func IDOf(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:16])
}

// Envelope is the signed unit a client submits: the body bytes of one command plus who issued it
// and its request ID. Sig is an ed25519 signature by the issuer over SigningBytes().
//
// (Issuer, RequestID) identifies the request: the state applies it at most once, and a retry of an
// applied request returns the cached Result (see State.Apply for the dedupe window).
type Envelope struct {
	_msgpack  struct{} `msgpack:",as_array"`
	Version   uint16
	Type      CommandType
	Issuer    string // IDOf(issuer's public key)
	RequestID uint64 // >= 1, unique per issuer; fresh requests should use increasing IDs
	Body      []byte // msgpack of the Body type selected by Type
	Sig       []byte // ed25519 signature over SigningBytes()
}

// SigningBytes returns the canonical bytes a signature covers: a domain prefix and the msgpack
// array [Version, Type, Issuer, RequestID, Body] (the envelope minus its signature).
func (e *Envelope) SigningBytes() []byte {
	var buf bytes.Buffer
	buf.WriteString(signingDomain)
	enc := msgpack.NewEncoder(&buf)
	// Writes to a bytes.Buffer cannot fail.
	_ = enc.EncodeArrayLen(5)
	_ = enc.EncodeUint16(e.Version)
	_ = enc.EncodeUint8(uint8(e.Type))
	_ = enc.EncodeString(e.Issuer)
	_ = enc.EncodeUint64(e.RequestID)
	_ = enc.EncodeBytes(e.Body)
	return buf.Bytes()
}

// Verify checks the signature against pub and that the issuer is IDOf(pub).
func (e *Envelope) Verify(pub ed25519.PublicKey) error {
	if len(e.Sig) == 0 {
		return errf(ErrUnsigned, "%s request %d from %s", e.Type, e.RequestID, e.Issuer)
	}
	if len(pub) != ed25519.PublicKeySize {
		return errf(ErrBadSignature, "issuer %s has a %d-byte key", e.Issuer, len(pub))
	}
	if IDOf(pub) != e.Issuer {
		return errf(ErrBadSignature, "issuer %s does not match key id %s", e.Issuer, IDOf(pub))
	}
	if len(e.Sig) != ed25519.SignatureSize || !ed25519consensus.Verify(pub, e.SigningBytes(), e.Sig) {
		return errf(ErrBadSignature, "%s request %d from %s", e.Type, e.RequestID, e.Issuer)
	}
	return nil
}

// Marshal encodes the envelope for the wire (msgpack array).
func (e *Envelope) Marshal() ([]byte, error) {
	b, err := msgpack.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("consensus: encode envelope: %w", err)
	}
	if len(b) > MaxCommandBytes {
		return nil, errf(ErrInvalid, "envelope is %d bytes, limit %d", len(b), MaxCommandBytes)
	}
	return b, nil
}

// DecodeEnvelope decodes an envelope received from a client (Envelope.Marshal) and checks its
// version; the body is decoded by the state when applied. Use it rather than msgpack.Unmarshal on
// network bytes: it bounds sizes before allocating (see checkShape). It never panics.
func DecodeEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if len(b) > MaxCommandBytes {
		return e, errf(ErrDecode, "envelope is %d bytes, limit %d", len(b), MaxCommandBytes)
	}
	if err := decodeExact(b, &e, MaxListLen); err != nil {
		return Envelope{}, errf(ErrDecode, "envelope: %v", err)
	}
	if e.Version != Version {
		return Envelope{}, errf(ErrVersion, "envelope version %d", e.Version)
	}
	return e, nil
}

// Body is one command's payload. The concrete types are the *Body structs of this package.
type Body interface {
	Type() CommandType
}

// NewEnvelope encodes body and signs it with priv; the issuer is IDOf(priv.Public()).
func NewEnvelope(priv ed25519.PrivateKey, requestID uint64, body Body) (Envelope, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Envelope{}, errf(ErrInvalid, "private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	b, err := msgpack.Marshal(body)
	if err != nil {
		return Envelope{}, fmt.Errorf("consensus: encode %s body: %w", body.Type(), err)
	}
	e := Envelope{Version: Version, Type: body.Type(), Issuer: IDOf(priv.Public().(ed25519.PublicKey)),
		RequestID: requestID, Body: b}
	e.Sig = ed25519.Sign(priv, e.SigningBytes())
	return e, nil
}

// DecodeBody decodes the envelope's body into the Body type selected by its Type.
func (e *Envelope) DecodeBody() (Body, error) {
	var b Body
	switch e.Type {
	case CmdAddCoordinator:
		b = &AddCoordinatorBody{}
	case CmdRegister:
		b = &RegisterBody{}
	case CmdPropose:
		b = &ProposeBody{}
	case CmdVote:
		b = &VoteBody{}
	case CmdTally:
		b = &TallyBody{}
	case CmdJoin:
		b = &JoinBody{}
	case CmdOpenRound:
		b = &OpenRoundBody{}
	case CmdReceipt:
		b = &ReceiptBody{}
	case CmdScoreCommit:
		b = &ScoreCommitBody{}
	case CmdCloseRound:
		b = &CloseRoundBody{}
	case CmdReassign:
		b = &ReassignBody{}
	case CmdExtendRound:
		b = &ExtendRoundBody{}
	case CmdSetLimits:
		b = &SetLimitsBody{}
	case CmdFund:
		b = &FundBody{}
	case CmdGrant:
		b = &GrantBody{}
	case CmdApproveCoordinator:
		b = &ApproveCoordinatorBody{}
	default:
		return nil, errf(ErrDecode, "unknown command type %d", uint8(e.Type))
	}
	if err := decodeExact(e.Body, b, MaxListLen); err != nil {
		return nil, errf(ErrDecode, "%s body: %v", e.Type, err)
	}
	return b, nil
}

// Command is one raft log entry: a client's signed envelope plus the leader's stamps. The
// stamps lie outside the signature because only the leader appends to the log (Raft traffic is
// authenticated between admitted coordinator keys): the state uses Time (made monotone) for every
// time it records or compares against a deadline, and accepts the commands that drive rounds and
// pay the ledger only when their issuer is Leader.
type Command struct {
	_msgpack struct{} `msgpack:",as_array"`
	Version  uint16
	Time     int64 // unix milliseconds, stamped by the leader
	Env      Envelope
	Leader   string // the coordinator key ID of the leader that appended the entry
}

// Marshal encodes the command as a log entry.
func (c *Command) Marshal() ([]byte, error) {
	c.Version = Version
	b, err := msgpack.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("consensus: encode command: %w", err)
	}
	if len(b) > MaxCommandBytes {
		return nil, errf(ErrInvalid, "command is %d bytes, limit %d", len(b), MaxCommandBytes)
	}
	return b, nil
}

// DecodeCommand decodes a log entry written by Command.Marshal and checks its versions. It never
// panics; any malformed input yields an error wrapping ErrDecode or ErrVersion.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) > MaxCommandBytes {
		return c, errf(ErrDecode, "command is %d bytes, limit %d", len(b), MaxCommandBytes)
	}
	if err := decodeExact(b, &c, MaxListLen); err != nil {
		return Command{}, errf(ErrDecode, "log entry: %v", err)
	}
	if c.Version != Version {
		return Command{}, errf(ErrVersion, "log entry version %d", c.Version)
	}
	if c.Env.Version != Version {
		return Command{}, errf(ErrVersion, "envelope version %d", c.Env.Version)
	}
	return c, nil
}

// decodeExact decodes one msgpack value and rejects trailing bytes. Arrays and maps may hold at
// most maxLen elements (see msgcheck.Check).
func decodeExact(b []byte, v any, maxLen int) error {
	if err := msgcheck.Check(b, maxLen); err != nil {
		return err
	}
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d trailing bytes", r.Len())
	}
	return nil
}

// AddCoordinatorBody registers a coordinator node key. It is signed by the key it registers
// (proof of possession). The first one, while the state has no coordinator, bootstraps the
// cluster and names the other initial voters in Initial (from the operators' shared voter list);
// every later one registers a key that is approved: named in Initial, or approved by a majority
// of the coordinators (ApproveCoordinator), under the approved name.
type AddCoordinatorBody struct {
	_msgpack  struct{} `msgpack:",as_array"`
	PublicKey []byte
	Name      string
	Initial   []ApprovedCoordinator
}

// RegisterBody registers a member; it must be signed by the key it registers.
type RegisterBody struct {
	_msgpack     struct{} `msgpack:",as_array"`
	PublicKey    []byte
	Name         string
	Contributors []string // names of the contributors this member speaks for: its own (see ContributorKey); ≤ MaxContributorsPerMember
}

// Hyperparams are the training settings of a proposal. Floats travel as decimal strings so the
// state holds no floating point.
type Hyperparams struct {
	_msgpack      struct{} `msgpack:",as_array"`
	InnerSteps    uint32   // H
	Rounds        uint32   // outer rounds; > 0
	Codec         string   // e.g. "topk:0.05+int8"
	OuterLR       string   // e.g. "0.7"
	OuterMomentum string   // e.g. "0.9"
	ErrorDecay    string   // error-feedback decay β of the peers' residuals, e.g. "0.9"; "" is 1 (none)
	// The inner AdamW every peer trains with, on the cohort's timeline of Rounds × InnerSteps
	// steps (package spec reads them; "" means spec.Defaults'):
	InnerLR     string // peak learning rate, e.g. "0.001"
	WeightDecay string // decoupled weight decay, e.g. "0.1"
	Warmup      uint32 // steps of linear learning-rate warm-up from the cohort's first step; 0: none
	Schedule    string // "constant", or "cosine": decay to InnerLR/10 by the last step of the last round
	ClipNorm    string // global gradient-norm clip, e.g. "1"; "0": none
	// DownCodec codes the aggregates sent down to peers and replicas, e.g. "topk:0.03/m+q8"; ""
	// is protocol.DownCodec of Codec, the rule of every cohort proposed before the field existed.
	DownCodec string
}

// hyperparamsFields are the fields of Hyperparams in their wire order: eleven before DownCodec
// existed.
func (h *Hyperparams) hyperparamsFields() []any {
	return []any{&h.InnerSteps, &h.Rounds, &h.Codec, &h.OuterLR, &h.OuterMomentum, &h.ErrorDecay,
		&h.InnerLR, &h.WeightDecay, &h.Warmup, &h.Schedule, &h.ClipNorm, &h.DownCodec}
}

// EncodeMsgpack writes settings with no down codec as the eleven-element array they always were,
// so that logs, snapshots and state hashes from before DownCodec existed are unchanged; settings
// with one add it.
func (h Hyperparams) EncodeMsgpack(e *msgpack.Encoder) error {
	return encodeTrailing(e, h.hyperparamsFields(), h.DownCodec != "")
}

// DecodeMsgpack reads both forms EncodeMsgpack writes (and nil, the zero settings).
func (h *Hyperparams) DecodeMsgpack(d *msgpack.Decoder) error {
	*h = Hyperparams{}
	return decodeTrailing(d, "hyperparams", h.hyperparamsFields(), true)
}

// ProposeBody proposes a model. The voting deadline is the leader's stamp + VotingPeriodMs.
type ProposeBody struct {
	_msgpack       struct{} `msgpack:",as_array"`
	Name           string
	Model          string // model spec, e.g. "mlp:784-256-10"
	Dataset        string
	ValidationHash []byte
	Params         Hyperparams
	RewardPool     uint64
	MinMembers     uint32 // members needed in the cohort before its first round opens
	QuorumBP       uint32 // share of the eligible vote weight that must vote, basis points; ≥ Limits.MinQuorumBP
	ThresholdBP    uint32 // share of the cast weight that must vote yes, basis points; ≥ Limits.MinThresholdBP
	VotingPeriodMs int64  // > 0, ≤ Limits.MaxVotingPeriodMs
	// MaxMembers caps the cohort's members: 0 means Limits.MaxCohortMembers, more is refused.
	MaxMembers uint32
}

// VoteBody casts the issuer's vote on a proposal before its deadline.
type VoteBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Proposal uint64
	Yes      bool
}

// TallyBody decides a proposal at or after its deadline.
type TallyBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Proposal uint64
}

// ContributorData is one contributor's data as registered when joining a cohort.
type ContributorData struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Name is the member's name for the contributor in a JoinBody, and its ContributorKey in the
	// cohort's record.
	Name        string
	Fingerprint []byte
	Samples     uint64
	// DuplicateOf is set by the state (ignored in JoinBody): the earliest contributor in the
	// cohort that registered the same fingerprint, or "".
	DuplicateOf string
}

// JoinBody joins the issuer to a cohort with the data of contributors it speaks for.
type JoinBody struct {
	_msgpack     struct{} `msgpack:",as_array"`
	Cohort       uint64
	Contributors []ContributorData
}

// SliceAssignment gives the half-open range [Start, End) of the flat parameter vector to an
// aggregator node.
type SliceAssignment struct {
	_msgpack   struct{} `msgpack:",as_array"`
	Start, End uint64
	Aggregator string
}

// OpenRoundBody opens round Number (= the cohort's current round + 1) of a cohort.
type OpenRoundBody struct {
	_msgpack     struct{} `msgpack:",as_array"`
	Cohort       uint64
	Number       uint32
	Participants []string // member IDs, sorted, unique, all members of the cohort
	Slices       []SliceAssignment
	ModelHash    []byte // hash of θ_t every participant must start from
	Seed         uint64 // leader-chosen seed for the round (projections, sampling)
	Deadline     int64  // unix ms, after the leader's stamp
	// Excluded are participants whose updates the aggregators leave out of this round's aggregate
	// (sorted, unique, participants): the leader's decision from the scores committed so far, in
	// the log so that every aggregator applies the same one.
	Excluded []string
}

// ReceiptBody is a participant's signed report of its work in an open round.
type ReceiptBody struct {
	_msgpack       struct{} `msgpack:",as_array"`
	Cohort         uint64
	Round          uint32
	SamplesUsed    uint64
	BytesSent      uint64
	ModelHashAfter []byte
}

// Weight is one contributor's integer weight in a ScoreCommit.
type Weight struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Contributor string
	Weight      uint64
}

// ScoreCommitBody commits the integer data and compute weights of one round; the state pays the
// round's budget out of the cohort's pool. It is idempotent per (cohort, round).
type ScoreCommitBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Cohort   uint64
	Round    uint32
	Data     []Weight // sorted by contributor key (ContributorKey), unique
	Compute  []Weight // sorted by contributor key, unique
	// What the validator measured, recorded for reports (the ledger pays by Data and Compute only).
	Influence []Influence // sorted by contributor, unique
	Flags     []Flag      // sorted by (contributor, kind), unique
	Metrics   RoundMetrics
	Note      string // why the round earned nobody anything, when it did not
}

// Influence is a contributor's measured influence in one round, in fixed point (InfluenceUnit):
// the lower confidence bound of the first-order validation-loss decrease its data's update gave.
// Negative means the update made the validation loss worse.
//
// Credit is the share of the round's new credit its update earned, out of CreditScale (the
// credits of a round sum to at most CreditScale): the scoring pays a contributor by the credit it
// has earned over the rounds so far, and reads it back from here.
type Influence struct {
	Contributor string
	Value       int64
	Credit      uint64
}

// CreditScale is what the credits of one round sum to at most (Influence.Credit).
const CreditScale = 1_000_000_000_000

// EncodeMsgpack writes an influence without credit as the two-element array it always was, so
// that logs, snapshots and state hashes from before Credit existed are unchanged.
func (x Influence) EncodeMsgpack(e *msgpack.Encoder) error {
	return encodeTrailing(e, []any{&x.Contributor, &x.Value, &x.Credit}, x.Credit != 0)
}

// DecodeMsgpack reads both forms EncodeMsgpack writes.
func (x *Influence) DecodeMsgpack(d *msgpack.Decoder) error {
	*x = Influence{}
	return decodeTrailing(d, "influence", []any{&x.Contributor, &x.Value, &x.Credit}, false)
}

// InfluenceUnit is the fixed-point scale of Influence.Value: Value = round(influence × 1e9).
const InfluenceUnit = 1e9

// Flag marks something the validator noticed about a contributor in a round.
type Flag struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Contributor string
	Kind        string // e.g. "duplicate", "negative-influence", "scaled", "stale", "empty"
	Detail      string // e.g. "duplicate of alice", "update 97× the median norm"
}

// RoundMetrics is the validation loss and accuracy of θ_{t+1}, in fixed point: loss in micro-units
// (1e-6), accuracy in basis points. Measured is false when the validator did not measure them.
type RoundMetrics struct {
	_msgpack      struct{} `msgpack:",as_array"`
	Measured      bool
	ValLossMicro  uint64
	ValAccuracyBP uint32
	Samples       uint32 // validation samples evaluated
}

// CloseRoundBody closes an open round and records the new model hash θ_{t+1}.
type CloseRoundBody struct {
	_msgpack  struct{} `msgpack:",as_array"`
	Cohort    uint64
	Round     uint32
	ModelHash []byte
}

// Type implements Body.
func (*AddCoordinatorBody) Type() CommandType { return CmdAddCoordinator }

// Type implements Body.
func (*RegisterBody) Type() CommandType { return CmdRegister }

// Type implements Body.
func (*ProposeBody) Type() CommandType { return CmdPropose }

// Type implements Body.
func (*VoteBody) Type() CommandType { return CmdVote }

// Type implements Body.
func (*TallyBody) Type() CommandType { return CmdTally }

// Type implements Body.
func (*JoinBody) Type() CommandType { return CmdJoin }

// Type implements Body.
func (*OpenRoundBody) Type() CommandType { return CmdOpenRound }

// Type implements Body.
func (*ReceiptBody) Type() CommandType { return CmdReceipt }

// Type implements Body.
func (*ScoreCommitBody) Type() CommandType { return CmdScoreCommit }

// Type implements Body.
func (*CloseRoundBody) Type() CommandType { return CmdCloseRound }

// ReassignBody moves one slice of an open round to another aggregator (its aggregator failed) and
// may extend the round's deadline so that participants can resend that slice there.
type ReassignBody struct {
	_msgpack   struct{} `msgpack:",as_array"`
	Cohort     uint64
	Round      uint32
	Slice      uint32
	Aggregator string
	Deadline   int64 // unix ms; the round's deadline becomes the later of this and the current one
}

// Type implements Body.
func (*ReassignBody) Type() CommandType { return CmdReassign }

// ExtendRoundBody moves the deadline of an open round later. A leader that takes over a round an
// earlier leader opened issues it: peers that were waiting on the dead leader learn of the round
// late, and their uploads — and, after them, everyone's receipts — need the time.
type ExtendRoundBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Cohort   uint64
	Round    uint32
	Deadline int64 // unix ms; must be after the round's deadline and after now
}

// Type implements Body.
func (*ExtendRoundBody) Type() CommandType { return CmdExtendRound }

// SetLimitsBody (operator) replaces the cluster's limits; zero fields mean the defaults. Lowering
// a limit refuses new commands past it and leaves what the state already holds.
type SetLimitsBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Limits   Limits
}

// Type implements Body.
func (*SetLimitsBody) Type() CommandType { return CmdSetLimits }

// FundBody (operator) credits the treasury, from which passed proposals take their reward pools.
type FundBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Amount   uint64   // > 0
}

// Type implements Body.
func (*FundBody) Type() CommandType { return CmdFund }

// GrantBody (operator) sets the vote weight operators grant a member (0 takes it back). A fresh
// key weighs nothing until it is granted weight or its contributors earn. More names further
// members granted the same weight by the same motion (sorted, distinct, at most MaxListLen): a
// community of thousands is granted its votes in a few commands, not one motion per member.
// The grant applies to all of them or, if any is unknown, to none.
type GrantBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	Member   string   // member ID
	Votes    uint64
	More     []string `msgpack:",omitempty"`
}

// Type implements Body.
func (*GrantBody) Type() CommandType { return CmdGrant }

// EncodeMsgpack writes a grant of one member as the two-element array it always was, so that
// logs and nodes from before More existed read it unchanged; a grant of many adds More.
func (b *GrantBody) EncodeMsgpack(e *msgpack.Encoder) error {
	return encodeTrailing(e, []any{&b.Member, &b.Votes, &b.More}, len(b.More) > 0)
}

// DecodeMsgpack reads both forms EncodeMsgpack writes.
func (b *GrantBody) DecodeMsgpack(d *msgpack.Decoder) error {
	*b = GrantBody{}
	return decodeTrailing(d, "grant", []any{&b.Member, &b.Votes, &b.More}, false)
}
