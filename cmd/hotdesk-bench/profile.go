package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// startCPUProfile writes a CPU profile of this process (the brokers and
// the simulated terminals; the etcd members run in a child process unless
// -etcd-inproc) to path until the returned stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	return startRecording("cpuprofile", path, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startTrace writes an execution trace (scheduling latency, GC, blocking)
// to path until the returned stop is called.
func startTrace(path string) (stop func(), err error) {
	return startRecording("trace", path, trace.Start, trace.Stop)
}

// startRecording creates path and runs start on it; the returned stop runs
// end and closes the file. what names the recording in errors.
func startRecording(what, path string, start func(io.Writer) error, end func()) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", what, err)
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: %s: %w", what, err)
	}
	return func() { end(); f.Close() }, nil
}
