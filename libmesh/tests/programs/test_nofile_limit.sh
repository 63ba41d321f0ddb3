#!/usr/bin/env bash
# libmesh takes no descriptor a program counts on: its memfd lives at 100 or
# above, and where RLIMIT_NOFILE leaves none free there (the soft limit is
# 100 or less, or every descriptor from 100 up is taken), it keeps none: the
# heap is private memory and meshing is off, said once on stderr.  Under a
# limit of 4, a program still opens a file.
. "$(dirname "$0")/lib.sh"
child=$top/libmesh/tests/bin/limits_child
rc=0
out=$(ulimit -n 4; LD_PRELOAD=$LIBMESH "$child" open /etc/passwd 2>"$scratch/err") || rc=$?
cat "$scratch/err"
[ $rc -eq 0 ] && [ "$out" = "read $(stat -c %s /etc/passwd)" ] || fail "open under ulimit -n 4: exit $rc, '$out'"
[ "$(grep -c '^mesh: no file descriptor from 100 up is free' "$scratch/err")" -eq 1 ] || fail "not said once on stderr"
cp /etc/passwd "$scratch/file"
out=$(prlimit --nofile=4 env LD_PRELOAD=$LIBMESH cat "$scratch/file" 2>"$scratch/err2") || fail "cat under prlimit --nofile=4"
[ "$out" = "$(cat "$scratch/file")" ] || fail "cat printed something else"
# With descriptors to spare the memfd is kept, and nothing is said.
(ulimit -n 1024; LD_PRELOAD=$LIBMESH "$child" open /etc/passwd >/dev/null 2>"$scratch/err3") || fail "ulimit -n 1024"
[ ! -s "$scratch/err3" ] || fail "a message with descriptors to spare: $(cat "$scratch/err3")"
echo ok
