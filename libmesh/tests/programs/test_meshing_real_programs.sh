#!/usr/bin/env bash
# Real programs under heavy meshing (a pass every millisecond): perl, ruby
# and python fragment their heaps, libmesh meshes them while they run, and
# their output must match glibc's.
. "$(dirname "$0")/lib.sh"
cat >"$scratch/t.pl" <<'PL'
my %h;
for my $i (1 .. 300000) { $h{"k$i"} = "v" x ($i % 300); }
delete $h{$_} for grep { /[13579]$/ } keys %h;
for my $i (1 .. 100000) { $h{"n$i"} = "w" x ($i % 200); }
my $t = 0; $t += length($h{$_}) for keys %h; print "$t\n";
PL
cat >"$scratch/t.rb" <<'RB'
a = (1..300000).map { |i| "x" * (50 + i % 400) }
a.each_index { |i| a[i] = nil if i % 3 != 0 }
GC.start
b = (1..100000).map { |i| "y" * (i % 300) }
t = Thread.new { (1..50000).map { |i| "z" * (i % 700) }.sum(&:size) }
puts a.compact.sum(&:size) + b.sum(&:size) + t.value
RB
cat >"$scratch/t.py" <<'PY'
import random, threading
random.seed(7)
keep = [b"x" * (600 + i % 400) for i in range(200000)]
for i in range(len(keep)):
    if random.random() < 0.7: keep[i] = None
def work(): return sum(len(bytes(700 + i % 300)) for i in range(30000))
ts = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
more = [bytearray(900 + i % 100) for i in range(50000)]
print(sum(len(k) for k in keep if k) + sum(len(m) for m in more))
PY
for prog in "perl $scratch/t.pl" "ruby $scratch/t.rb" "/usr/bin/python3 $scratch/t.py"; do
    want=$($prog)
    got=$(MESH_PERIOD_MS=1 MALLOCSTATS=1 LD_PRELOAD=$LIBMESH $prog 2>"$scratch/err")
    ran_on_mesh "$scratch/err"
    meshes=$(sed -n 's/^MESH COUNT: //p' "$scratch/err")
    echo "$prog: $got ($meshes meshes)"
    [ "$got" = "$want" ] || fail "$prog printed $got under libmesh, $want under glibc"
    [ "$meshes" -gt 100 ] || fail "$prog: only $meshes meshes"
done
