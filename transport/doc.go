// Package transport is Cohort's QUIC plumbing, shared by the coordinator and the peers.
// It is the only package that imports quic-go, and it imports no other Cohort package.
package transport
