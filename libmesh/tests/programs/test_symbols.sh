#!/usr/bin/env bash
# libmesh.so exports the malloc family, the mesh_ API and the calls it
# interposes for the write barrier, as idle points, for mlockall and for
# address space under RLIMIT_AS, nothing else.
. "$(dirname "$0")/lib.sh"
allowed='^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|malloc_usable_size|malloc_trim|mallopt|mallinfo|mallinfo2|malloc_stats|mesh_[a-z_]+|sigaction|signal|sigprocmask|pthread_sigmask|sigsuspend|mlockall|mmap|mmap64|pthread_create|read|pread|pread64|readv|preadv|recv|recvfrom|recvmsg|recvmmsg|sigtimedwait|sigwaitinfo|poll|ppoll|select|pselect|epoll_wait|epoll_pwait|nanosleep|clock_nanosleep|usleep|sleep)$'
nm -D --defined-only "$LIBMESH" | awk '{print $3}' | sed 's/@.*//' | sort -u >"$scratch/syms"
cat "$scratch/syms"
bad=$(grep -Ev "$allowed" "$scratch/syms" || true)
[ -z "$bad" ] || fail "unexpected exported symbols: $bad"
for s in malloc free calloc realloc posix_memalign aligned_alloc malloc_usable_size mesh_mallctl; do
    grep -qx "$s" "$scratch/syms" || fail "$s is not exported"
done
echo ok
