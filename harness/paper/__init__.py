"""The paper's figures on real programs, beside the paper's numbers.

  redis_fig      Figure 7: Debian's redis-server running the paper's script
  redis_build    redis-server built from Debian's source, with active defrag
  ruby_fig       Figure 8: Debian's ruby running workloads/ruby/fragment.rb
  webkit_fig     Figure 6 on WebKitGTK running browser/'s TodoMVC benchmark
  redis_latency  redis-benchmark's latencies against Figure 7's fragmented server
  collect        runs every figure (and the synthetic/throughput matrix) into
                 one results document
  compact        shrinks that document for committing, keeping its numbers
  figures        the numbers of each figure, from a results document only
  claims         the paper's numbers
  plots          the figures' plots (matplotlib)
  report         paper-figures.md, put together from one section a figure:
  redis_report   Figure 7's section (redis_defrag: what compaction bought and cost)
  sections       the sections of Figure 8, Figure 6's stand-in and the matrix
  webkit_report  Figure 6 on WebKit: its numbers and its section
  redis_latency_report
                 the redis-latency figure: its numbers and its section
  tables         the tables and generated notes those sections are made of
  cli            the `paper` commands of /usr/bin/python3 -m harness

/usr/bin/python3 -m harness paper --help
"""
