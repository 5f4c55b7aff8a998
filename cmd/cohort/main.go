// Command cohort trains one model with many independent peers over slow links and pays each data
// contributor a fair share. See README.md for the user flows; `cohort --help` lists the commands.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "cohort: %v\n", err)
		os.Exit(1)
	}
}
