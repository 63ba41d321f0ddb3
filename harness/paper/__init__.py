"""The paper's figures on real programs, beside the paper's numbers.

  redis_fig   Figure 7: Debian's redis-server running the paper's script
  ruby_fig    Figure 8: Debian's ruby running workloads/ruby/fragment.rb
  collect     runs every figure (and the synthetic/throughput matrix) into
              one results document
  compact     shrinks that document for committing, keeping its numbers
  figures     the numbers of each figure, from a results document only
  claims      the paper's numbers
  plots       the figures' plots (matplotlib)
  report      paper-figures.md
  cli         the `paper` commands of /usr/bin/python3 -m harness

/usr/bin/python3 -m harness paper --help
"""
