using System.Net;
using System.Net.Sockets;
using System.Text;
using BenchmarkDotNet.Attributes;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Benchmarks;

// One mail transaction through DownstreamClient (MAIL, RCPT, then a 2 KB message with DATA or
// BDAT, then RSET, as the gateway does on a pooled connection: EHLO once) against an in-process
// server on loopback that answers from fixed bytes and allocates nothing itself: the client's
// time and allocated bytes per transaction (issue 13). With SessionToken every call carries a
// cancellable token, as the gateway's calls carry the session's.
// Completed work items count the thread-pool hops per transaction.
[MemoryDiagnoser]
[ThreadingDiagnoser]
public class DownstreamBenchmarks
{
    private static readonly byte[] Headers = "Received: from client.test ([192.0.2.1])\r\n\tby gw.test (Portcullis) with ESMTP id B1\r\nX-Virus-Scanned: bench\r\n"u8.ToArray();

    private LoopbackResponder? _server;
    private DownstreamClient? _client;
    private ArrayContent? _message;

    private readonly CancellationTokenSource _session = new();

    [Params(false, true)]
    public bool Chunking { get; set; }

    [Params(false, true)]
    public bool SessionToken { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var body = new StringBuilder("From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: bench\r\n\r\n");
        for (int i = 0; body.Length < 2048; i++) body.Append(i % 16 == 0 ? ".a line that starts with a dot\r\n" : "Lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n");
        _message = new ArrayContent(Encoding.ASCII.GetBytes(body.ToString()));
        _server = new LoopbackResponder(Chunking);
        _client = DownstreamClient.ConnectAsync(new DownstreamOptions { Host = "127.0.0.1", Port = _server.Port, HeloName = "gw.test" })
            .GetAwaiter().GetResult();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _client?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _server?.Dispose();
        _session.Dispose();
    }

    [Benchmark]
    public async Task<int> Transaction()
    {
        var client = _client!;
        var ct = SessionToken ? _session.Token : CancellationToken.None;
        var mail = client.MailAsync("<alice@example.org>", "SIZE=2600", ct);
        var rcpt = client.RcptAsync("<bob@example.net>", null, ct);
        await client.FlushAsync(ct);
        int code = (await mail).Code + (await rcpt).Code;
        var final = await client.SendMessageAsync(Headers, _message!, ct);
        var rset = await client.RsetAsync(ct);
        return code + final.Code + rset.Code;
    }

    // `dotnet run -c Release --project tests/Benchmarks -- downstream-cpu [transactions]`: the
    // process CPU time per transaction (client and responder both, the responder's share the same
    // for every client), which wall-clock means on loopback hide behind the round trips.
    public static void MeasureCpu(int transactions)
    {
        foreach (bool chunking in new[] { false, true })
        {
            var bench = new DownstreamBenchmarks { Chunking = chunking, SessionToken = true };
            bench.Setup();
            try
            {
                for (int i = 0; i < transactions / 10; i++) bench.Transaction().GetAwaiter().GetResult();
                var process = System.Diagnostics.Process.GetCurrentProcess();
                process.Refresh();
                var cpu = process.TotalProcessorTime;
                var user = process.UserProcessorTime;
                long allocated = GC.GetTotalAllocatedBytes(precise: true);
                var wall = System.Diagnostics.Stopwatch.StartNew();
                for (int i = 0; i < transactions; i++) bench.Transaction().GetAwaiter().GetResult();
                wall.Stop();
                process.Refresh();
                double cpuUs = (process.TotalProcessorTime - cpu).TotalMicroseconds / transactions;
                double userUs = (process.UserProcessorTime - user).TotalMicroseconds / transactions;
                double bytes = (double)(GC.GetTotalAllocatedBytes(precise: true) - allocated) / transactions;
                Console.WriteLine(System.FormattableString.Invariant(
                    $"Chunking={chunking}: CPU {cpuUs:0.0} us ({userUs:0.0} us user), wall {wall.Elapsed.TotalMicroseconds / transactions:0.0} us, allocated {bytes:0} B per transaction"));
            }
            finally
            {
                bench.Cleanup();
            }
        }
    }

    private sealed class ArrayContent(byte[] bytes) : IMessageContent
    {
        public long Length => bytes.Length;

        public int Read(long offset, Span<byte> destination)
        {
            int n = (int)Math.Min(destination.Length, bytes.Length - offset);
            bytes.AsSpan((int)offset, n).CopyTo(destination);
            return n;
        }
    }

    // Replies to each command line; skips DATA text to CRLF.CRLF and BDAT chunks by their size.
    private sealed class LoopbackResponder : IDisposable
    {
        private static readonly byte[] Banner = "220 sink.bench ESMTP\r\n"u8.ToArray();
        private static readonly byte[] Ok = "250 2.0.0 Ok\r\n"u8.ToArray();
        private static readonly byte[] GoAhead = "354 go ahead\r\n"u8.ToArray();
        private static readonly byte[] Bye = "221 2.0.0 Bye\r\n"u8.ToArray();
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly byte[] _ehlo;
        private readonly Task _serving;

        public LoopbackResponder(bool chunking)
        {
            _ehlo = Encoding.ASCII.GetBytes("250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n" + (chunking ? "250-CHUNKING\r\n" : "") + "250 SIZE 10240000\r\n");
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(1);
            _serving = ServeAsync();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

        private async Task ServeAsync()
        {
            using var socket = await _listener.AcceptAsync();
            socket.NoDelay = true;
            var buffer = new byte[256 * 1024];
            int filled = 0, start = 0;
            bool inData = false;
            long skip = 0;
            await socket.SendAsync(Banner);
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer.AsMemory(filled));
                if (n == 0) return;
                filled += n;
                while (true)
                {
                    if (skip > 0)
                    {
                        int take = (int)Math.Min(skip, filled - start);
                        skip -= take;
                        start += take;
                        if (skip > 0) break;
                        await socket.SendAsync(Ok);
                        continue;
                    }
                    var window = buffer.AsMemory(start, filled - start);
                    if (inData)
                    {
                        int end = window.Span.IndexOf("\r\n.\r\n"u8);
                        if (end < 0) break;
                        start += end + 5;
                        inData = false;
                        await socket.SendAsync(Ok);
                        continue;
                    }
                    int lf = window.Span.IndexOf((byte)'\n');
                    if (lf < 0) break;
                    var line = window.Span[..lf];
                    start += lf + 1;
                    if (line.StartsWith("EHLO"u8)) await socket.SendAsync(_ehlo);
                    else if (line.StartsWith("QUIT"u8)) { await socket.SendAsync(Bye); return; }
                    else if (line.StartsWith("DATA"u8)) { inData = true; start -= 2; await socket.SendAsync(GoAhead); }
                    else if (line.StartsWith("BDAT "u8)) skip = ChunkSize(line[5..]);
                    else await socket.SendAsync(Ok);
                }
                // Keep what is left at the front.
                buffer.AsSpan(start, filled - start).CopyTo(buffer);
                filled -= start;
                start = 0;
            }
        }

        private static long ChunkSize(ReadOnlySpan<byte> arguments)
        {
            long size = 0;
            foreach (byte b in arguments)
            {
                if (b is < (byte)'0' or > (byte)'9') break;
                size = size * 10 + (b - '0');
            }
            return size;
        }

        public void Dispose()
        {
            _listener.Dispose();
            try { _serving.Wait(TimeSpan.FromSeconds(5)); }
            catch (AggregateException) { }
        }
    }
}
