// Micro-benchmarks for the hot paths, with allocated bytes: `make bench-micro`.
// Figures are compared as ratios within one run; never asserted as times.
using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Portcullis.Benchmarks.CommandParserBenchmarks).Assembly).Run(args);
