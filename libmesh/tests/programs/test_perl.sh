#!/usr/bin/env bash
# perl on libmesh: hashes, regexes, sorting, string growth.
. "$(dirname "$0")/lib.sh"
cat >"$scratch/t.pl" <<'PL'
use strict; use warnings;
my %h; my $s = "";
for my $i (1 .. 200000) { $h{"k$i"} = "v" x ($i % 100); $s .= chr(65 + $i % 26) if $i % 7 == 0; }
my @words = sort { $h{$a} cmp $h{$b} or $a cmp $b } grep { /7/ } keys %h;
my $count = () = $s =~ /ABC/g;
delete $h{$_} for grep { /^k1/ } keys %h;
printf "%d %d %s %d %d\n", scalar(keys %h), scalar(@words), $words[-1], length($s), $count;
PL
perl "$scratch/t.pl" >"$scratch/want"
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH perl "$scratch/t.pl" >"$scratch/got" 2>"$scratch/err"
ran_on_mesh "$scratch/err"
cat "$scratch/got"
diff "$scratch/want" "$scratch/got" || fail "output differs from glibc's"
