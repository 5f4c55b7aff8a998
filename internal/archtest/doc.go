// Package archtest holds the test that keeps the project's dependencies pointing one way
// (see the layout in the README): leaves import no project package, and each heavy third-party library stays in
// the one package that wraps it.
package archtest
