// Package archtest holds the tests that keep the architecture as docs/architecture.md draws it:
// every package's project imports point one way (layers), each heavy third-party library stays
// in the one package that wraps it (confined, thirdParty), and the pure packages — where
// protocol, round, ledger and attribution decisions are made — read no clock, start no
// goroutine and open no socket or file (pure).
package archtest
