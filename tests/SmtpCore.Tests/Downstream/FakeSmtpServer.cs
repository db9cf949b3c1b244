// A scripted SMTP server for DownstreamClient tests: it accepts one connection on 127.0.0.1
// and runs a script against it (greet with chosen extensions, expect lines, reply, hang, close).
// Assertions inside the script surface through AssertScriptSucceededAsync.
using System.Net;
using System.Net.Sockets;
using System.Text;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

internal sealed class FakeSmtpServer : IAsyncDisposable
{
    private static readonly TimeSpan ScriptLimit = TimeSpan.FromSeconds(30);
    private readonly TcpListener _listener;

    private FakeSmtpServer(Func<FakeSmtpConnection, Task> script)
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        Completion = RunAsync(script);
    }

    public int Port { get; }
    public Task Completion { get; }

    public static FakeSmtpServer Start(Func<FakeSmtpConnection, Task> script) => new(script);

    public DownstreamOptions Options(TimeSpan? replyTimeout = null) => new()
    {
        Host = "127.0.0.1",
        Port = Port,
        HeloName = "gw.test",
        ConnectTimeout = TimeSpan.FromSeconds(5),
        ReplyTimeout = replyTimeout ?? TimeSpan.FromSeconds(10),
        DataReplyTimeout = replyTimeout ?? TimeSpan.FromSeconds(10),
    };

    public Task<DownstreamClient> ConnectAsync(TimeSpan? replyTimeout = null) =>
        DownstreamClient.ConnectAsync(Options(replyTimeout), CancellationToken.None);

    public Task AssertScriptSucceededAsync() => Completion.WaitAsync(ScriptLimit);

    private async Task RunAsync(Func<FakeSmtpConnection, Task> script)
    {
        try
        {
            using var tcp = await _listener.AcceptTcpClientAsync().WaitAsync(ScriptLimit);
            var connection = new FakeSmtpConnection(tcp);
            await script(connection).WaitAsync(ScriptLimit);
        }
        finally
        {
            _listener.Stop();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Stop();
        try
        {
            await Completion.WaitAsync(ScriptLimit);
        }
        catch
        {
            // Tests that care call AssertScriptSucceededAsync.
        }
    }
}

internal sealed class FakeSmtpConnection(TcpClient tcp)
{
    private readonly NetworkStream _stream = tcp.GetStream();
    private byte[] _buffer = new byte[64 * 1024];
    private int _start, _end;

    // Size of every socket read, so a test can tell how the client's writes arrived.
    public List<int> ReadSizes { get; } = [];

    public string? EhloLine { get; private set; }

    // 220 banner, then EHLO answered with the given extension lines.
    public async Task GreetAsync(params string[] extensions)
    {
        await SendAsync("220 fake.test ESMTP ready\r\n");
        EhloLine = await ReadLineAsync();
        Assert.Equal("EHLO gw.test", EhloLine);
        var sb = new StringBuilder();
        string[] lines = ["fake.test greets gw.test", .. extensions];
        for (int i = 0; i < lines.Length; i++) sb.Append(i == lines.Length - 1 ? "250 " : "250-").Append(lines[i]).Append("\r\n");
        await SendAsync(sb.ToString());
    }

    // Reads one command line, checks it, answers it.
    public async Task ExpectAsync(string line, string reply)
    {
        Assert.Equal(line, await ReadLineAsync());
        await ReplyAsync(reply);
    }

    public Task ReplyAsync(string reply) => SendAsync(reply.EndsWith("\r\n", StringComparison.Ordinal) ? reply : reply + "\r\n");

    public async Task SendAsync(string wire)
    {
        var bytes = Encoding.UTF8.GetBytes(wire);
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    public async Task<string> ReadLineAsync()
    {
        var raw = await ReadRawLineAsync();
        Assert.True(raw.Length >= 2 && raw[^2] == '\r', $"command line not ended by CRLF: {Encoding.UTF8.GetString(raw)}");
        return Encoding.UTF8.GetString(raw, 0, raw.Length - 2);
    }

    // Bytes up to and including the next LF.
    public async Task<byte[]> ReadRawLineAsync()
    {
        while (true)
        {
            int lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                var line = _buffer[_start..(lf + 1)];
                _start = lf + 1;
                return line;
            }
            if (!await FillAsync()) throw new EndOfStreamException("client closed the connection");
        }
    }

    public async Task<byte[]> ReadExactAsync(int count)
    {
        var result = new byte[count];
        int have = 0;
        while (have < count)
        {
            if (_start == _end && !await FillAsync()) throw new EndOfStreamException("client closed the connection");
            int n = Math.Min(count - have, _end - _start);
            Array.Copy(_buffer, _start, result, have, n);
            _start += n;
            have += n;
        }
        return result;
    }

    // The message after a 354, un-stuffed by the reference rule (DotUnstuffing.Reference).
    public async Task<byte[]> ReadDataAsync()
    {
        var wire = new MemoryStream();
        while (true)
        {
            var line = await ReadRawLineAsync();
            wire.Write(line);
            if (line.AsSpan().SequenceEqual(".\r\n"u8)) break;
        }
        var (data, consumed) = DotUnstuffing.Reference(wire.ToArray());
        Assert.Equal(wire.Length, consumed);
        return data;
    }

    // True when the client sends nothing more for a while: the lock-step check needs a negative.
    public async Task<bool> StaysQuietAsync(TimeSpan window)
    {
        if (_end > _start) return false;
        using var cts = new CancellationTokenSource(window);
        try
        {
            return !await FillAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            return true;
        }
    }

    // Hangs: answers nothing until the client gives up and closes.
    public async Task WaitForCloseAsync()
    {
        _start = _end;
        while (await FillAsync()) _start = _end;
    }

    public void Close() => tcp.Client.Close();

    private async Task<bool> FillAsync(CancellationToken ct = default)
    {
        if (_start > 0)
        {
            Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length) Array.Resize(ref _buffer, _buffer.Length * 2);
        int n;
        try
        {
            n = await _stream.ReadAsync(_buffer.AsMemory(_end), ct);
        }
        catch (IOException)
        {
            n = 0;   // reset by the client counts as closed
        }
        if (n == 0) return false;
        ReadSizes.Add(n);
        _end += n;
        return true;
    }
}

internal sealed class ArrayContent(byte[] data, int maxRead = int.MaxValue) : IMessageContent
{
    public long Length => data.Length;

    // maxRead makes reads short, like a spill file read in pieces.
    public int Read(long offset, Span<byte> destination)
    {
        if (offset >= data.Length) return 0;
        int n = (int)Math.Min(Math.Min(destination.Length, maxRead), data.Length - offset);
        data.AsSpan((int)offset, n).CopyTo(destination);
        return n;
    }
}

internal static class DotUnstuffing
{
    // Naive reference receiver (RFC 5321 §4.5.2): split after every LF; ".\r\n" ends the data;
    // otherwise a leading '.' is dropped. Returns the data and how many wire bytes it used.
    public static (byte[] Data, int Consumed) Reference(byte[] wire)
    {
        var data = new List<byte>();
        int pos = 0;
        while (pos < wire.Length)
        {
            int lf = Array.IndexOf(wire, (byte)'\n', pos);
            int end = lf < 0 ? wire.Length : lf + 1;
            var line = wire[pos..end];
            pos = end;
            if (line.AsSpan().SequenceEqual(".\r\n"u8)) return ([.. data], pos);
            data.AddRange(line.Length > 0 && line[0] == '.' ? line[1..] : line);
        }
        throw new InvalidDataException("no end-of-data line");
    }
}
