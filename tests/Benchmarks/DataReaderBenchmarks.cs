using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Benchmarks;

// The DATA reader over a 5 KB and a 1 MB message arriving in 16 KB reads.
[MemoryDiagnoser]
public class DataReaderBenchmarks
{
    private byte[] _wire = [];
    private readonly ArrayBufferWriter<byte> _sink = new(2 << 20);

    [Params(5 * 1024, 1024 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var sb = new StringBuilder();
        sb.Append("From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n");
        var rnd = new Random(1);
        while (sb.Length < Size)
        {
            int len = rnd.Next(10, 78);
            if (rnd.Next(20) == 0) sb.Append('.');
            for (int i = 0; i < len; i++) sb.Append((char)('a' + rnd.Next(26)));
            sb.Append("\r\n");
        }
        sb.Append(".\r\n");
        _wire = Encoding.ASCII.GetBytes(sb.ToString());
    }

    [Benchmark]
    public long Read()
    {
        _sink.ResetWrittenCount();
        var reader = new DataReader(_sink, long.MaxValue, BareNewlinePolicy.Normalize, dotTransparency: true);
        int offset = 0;
        while (!reader.IsComplete && offset < _wire.Length)
        {
            int n = Math.Min(16 * 1024, _wire.Length - offset);
            offset += reader.Process(_wire.AsSpan(offset, n));
        }
        return reader.Size;
    }
}
