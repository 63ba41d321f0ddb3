#!/usr/bin/env bash
# MALLOCSTATS=1 prints the original Mesh's seven lines, in order and format;
# MALLOCSTATS=2 adds the counters and per-class detail.
. "$(dirname "$0")/lib.sh"
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH /usr/bin/python3 -c 'x = [str(i) * 20 for i in range(100000)]' 2>"$scratch/err"
cat "$scratch/err"
cat >"$scratch/want" <<'PATTERNS'
^MESH COUNT: [0-9]+$
^Meshed MB \(total\): [0-9]+\.[0-9]$
^Meshed pages HWM: [0-9]+$
^Meshed MB HWM: [0-9]+\.[0-9]$
^MH Alloc Count: [0-9]+$
^MH Free Count: [0-9]+$
^MH High Water Mark: [0-9]+$
PATTERNS
[ "$(wc -l <"$scratch/err")" -eq 7 ] || fail "expected exactly 7 lines"
i=1
while read -r pattern; do
    line=$(sed -n "${i}p" "$scratch/err")
    echo "$line" | grep -Eq "$pattern" || fail "line $i '$line' does not match $pattern"
    i=$((i + 1))
done <"$scratch/want"
alloc=$(sed -n 's/^MH Alloc Count: //p' "$scratch/err")
[ "$alloc" -gt 10 ] || fail "MH Alloc Count $alloc is implausibly small"
MALLOCSTATS=2 LD_PRELOAD=$LIBMESH /bin/true 2>"$scratch/err2"
grep -q '^-- size classes --$' "$scratch/err2" || fail "MALLOCSTATS=2 lacks per-class detail"
grep -q '^refill_count' "$scratch/err2" || fail "MALLOCSTATS=2 lacks counters"
# After a fragmenting run the mesh fields carry real values.
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH "$top/libmesh/bench/bin/mesh_bench" 8 1 compact >/dev/null 2>"$scratch/err4"
cat "$scratch/err4"
meshes=$(sed -n 's/^MESH COUNT: //p' "$scratch/err4")
[ "$meshes" -gt 100 ] || fail "MESH COUNT $meshes after a fragmenting run"
grep -Eq '^Meshed MB \(total\): [1-9][0-9]*\.[0-9]$' "$scratch/err4" || fail "Meshed MB (total) is zero"
hwm=$(sed -n 's/^Meshed pages HWM: //p' "$scratch/err4")
[ "$hwm" -gt 100 ] || fail "Meshed pages HWM $hwm"
MALLOCSTATS=0 LD_PRELOAD=$LIBMESH /bin/true 2>"$scratch/err3"
[ ! -s "$scratch/err3" ] || fail "MALLOCSTATS=0 printed something"
echo ok
