// Package version holds the build version, set by the Makefile through -ldflags.
package version

// Version is the release this binary was built from ("dev" when built without the Makefile).
// It is written once by the linker and never at run time.
var Version = "dev"
