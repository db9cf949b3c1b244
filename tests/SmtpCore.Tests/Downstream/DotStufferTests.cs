using System.Buffers;
using System.Text;
using FsCheck.Xunit;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

public class DotStufferTests
{
    [Theory]
    [InlineData("", ".\r\n")]
    [InlineData(".\r\n", "..\r\n.\r\n")]
    [InlineData(".", "..\r\n.\r\n")]
    [InlineData("a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n.\r\n")]
    [InlineData("no end", "no end\r\n.\r\n")]
    [InlineData("bare\n.lf\r\n", "bare\n..lf\r\n.\r\n")]
    [InlineData("mid.dot\r\n", "mid.dot\r\n.\r\n")]
    public void StuffsLineStartsAndTerminates(string data, string wire)
    {
        var output = new ArrayBufferWriter<byte>();
        var stuffer = new DotStuffer();
        stuffer.Write(Encoding.ASCII.GetBytes(data), output);
        stuffer.Finish(output);
        Assert.Equal(wire, Encoding.ASCII.GetString(output.WrittenSpan));
    }

    // Random CRLF-normalised bodies built from tokens that put '.', CR and LF in awkward places,
    // fed in random chunks, must come back byte-identical from the reference un-stuffer
    // (plus the CRLF that Finish adds when the body does not end with one).
    [Property(MaxTest = 500)]
    public bool DataStuffingRoundTripsThroughTheReferenceUnstuffer(byte[] picks, byte[] cuts)
    {
        string[] tokens = [".", "..", "\r\n", "a", " ", ".\r\n", "\r\n.\r\n", "x.y", "\r\n..", "\t"];
        var body = Encoding.ASCII.GetBytes(string.Concat((picks ?? []).Select(p => tokens[p % tokens.Length])));

        var output = new ArrayBufferWriter<byte>();
        var stuffer = new DotStuffer();
        int pos = 0;
        foreach (var cut in cuts ?? [])
        {
            int n = Math.Min(cut % 7, body.Length - pos);
            stuffer.Write(body.AsSpan(pos, n), output);
            pos += n;
        }
        stuffer.Write(body.AsSpan(pos), output);
        stuffer.Finish(output);

        var wire = output.WrittenSpan.ToArray();
        var (data, consumed) = DotUnstuffing.Reference(wire);
        bool endsWithCrLf = body.Length >= 2 && body[^2] == '\r' && body[^1] == '\n';
        var expected = body.Length == 0 || endsWithCrLf ? body : [.. body, (byte)'\r', (byte)'\n'];
        return consumed == wire.Length && data.AsSpan().SequenceEqual(expected);
    }

    // DownstreamClient passes a piece through as it is when TryPassThrough says it may, and
    // stuffs it otherwise: on random bodies and chunkings that must give exactly what Write gives.
    [Property(MaxTest = 500)]
    public bool PassingThroughWhereAllowedGivesWhatWriteGives(byte[] picks, byte[] cuts)
    {
        string[] tokens = [".", "..", "\r\n", "a", "\n", ".\r\n", "\r\n.\r\n", "x.y", "\r\n..", "\r"];
        var body = Encoding.ASCII.GetBytes(string.Concat((picks ?? []).Select(p => tokens[p % tokens.Length])));

        var expected = new ArrayBufferWriter<byte>();
        var reference = new DotStuffer();
        var actual = new ArrayBufferWriter<byte>();
        var stuffer = new DotStuffer();
        int pos = 0;
        foreach (var cut in (cuts ?? []).Append((byte)255))
        {
            int n = Math.Min(1 + cut % 7, body.Length - pos);
            if (n <= 0) break;
            var piece = body.AsSpan(pos, n);
            reference.Write(piece, expected);
            if (stuffer.TryPassThrough(piece)) actual.Write(piece);
            else stuffer.Write(piece, actual);
            pos += n;
        }
        reference.Write(body.AsSpan(pos), expected);
        if (stuffer.TryPassThrough(body.AsSpan(pos))) actual.Write(body.AsSpan(pos));
        else stuffer.Write(body.AsSpan(pos), actual);
        reference.Finish(expected);
        stuffer.Finish(actual);
        return expected.WrittenSpan.SequenceEqual(actual.WrittenSpan);
    }
}
