// The MADV_FREE drill's Go service: allocates MiB (argument, default 320) of heap in 1 MiB objects, writes every page,
// drops all references, runs the GC and debug.FreeOSMemory(): the runtime returns the freed heap to the kernel with
// madvise(MADV_FREE) when started with GODEBUG=madvdontneed=0 (the default of Go 1.12-1.15), so the pages stay in
// RSS as LazyFree until the kernel needs them. Waits for a line on stdin before allocating (so the drill can put it
// into its pod's cgroup first), prints "FREED", then idles until killed.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"
)

var heap [][]byte

func main() {
	mib := 320
	if len(os.Args) > 1 {
		if n, err := strconv.Atoi(os.Args[1]); err == nil {
			mib = n
		}
	}
	bufio.NewReader(os.Stdin).ReadString('\n')
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		heap = append(heap, b)
	}
	heap = nil
	runtime.GC()
	debug.FreeOSMemory()
	fmt.Println("FREED", os.Getenv("GODEBUG"))
	for {
		time.Sleep(time.Hour)
	}
}
