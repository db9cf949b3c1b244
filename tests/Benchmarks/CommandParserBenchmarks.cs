using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Benchmarks;

// A pipelined envelope as one buffer: the parser's per-command cost.
[MemoryDiagnoser]
public class CommandParserBenchmarks
{
    private ReadOnlySequence<byte> _envelope;

    [GlobalSetup]
    public void Setup()
    {
        var text = "MAIL FROM:<sender@example.org> SIZE=5120 BODY=8BITMIME\r\n"
                   + string.Concat(Enumerable.Range(0, 8).Select(i => $"RCPT TO:<user{i}@example.net>\r\n"))
                   + "DATA\r\n";
        _envelope = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text));
    }

    [Benchmark]
    public int ParseEnvelope()
    {
        var reader = new SequenceReader<byte>(_envelope);
        int n = 0;
        while (SmtpCommandParser.TryParse(ref reader, 2048, out var command) == ParseStatus.Complete)
            n += (int)command.Verb;
        return n;
    }

    [Benchmark]
    public bool ParseMailPath()
    {
        return PathArgumentParser.TryParse("FROM:<sender@example.org> SIZE=5120 BODY=8BITMIME", "FROM:", true, out _, out _);
    }
}
