using System.Buffers;
using System.Net;
using System.Text;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Protocol;

// PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt). Every header is also parsed from each
// of its prefixes (Incomplete, never a wrong answer) and from one-byte segments.
public sealed class ProxyHeaderParserTests
{
    private static readonly byte[] V2Signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    private static byte[] V2(byte command, byte family, byte[] body) =>
        [.. V2Signature, (byte)(0x20 | command), family, (byte)(body.Length >> 8), (byte)body.Length, .. body];

    private static readonly byte[] V2Tcp4 = V2(1, 0x11, [192, 0, 2, 10, 198, 51, 100, 1, 0xC3, 0x50, 0x00, 0x19, /* a TLV */ 0x04, 0x00, 0x01, 0x00]);
    private static readonly byte[] V2Tcp6 = V2(1, 0x21,
        [.. IPAddress.Parse("2001:db8::7").GetAddressBytes(), .. IPAddress.Parse("2001:db8::1").GetAddressBytes(), 0x30, 0x39, 0x01, 0xD1]);

    public static TheoryData<string, byte[], string?, int> Valid => new()
    {
        { "v1 TCP4", Encoding.ASCII.GetBytes("PROXY TCP4 192.0.2.10 198.51.100.1 50000 25\r\n"), "192.0.2.10:50000", 1 },
        { "v1 TCP6", Encoding.ASCII.GetBytes("PROXY TCP6 2001:db8::7 2001:db8::1 12345 465\r\n"), "[2001:db8::7]:12345", 1 },
        { "v1 UNKNOWN", Encoding.ASCII.GetBytes("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), null, 1 },
        { "v2 TCP4", V2Tcp4, "192.0.2.10:50000", 2 },
        { "v2 TCP6", V2Tcp6, "[2001:db8::7]:12345", 2 },
        { "v2 LOCAL", V2(0, 0x00, []), null, 2 },
    };

    [Theory]
    [MemberData(nameof(Valid))]
    public void ParsesTheHeaderAndLeavesWhatFollows(string name, byte[] header, string? source, int version)
    {
        byte[] input = [.. header, .. "EHLO x\r\n"u8];
        foreach (var (shape, sequence) in Sequences.Shapes(input))
        {
            var status = ProxyHeaderParser.TryParse(sequence, out var parsed, out int consumed, out _, out var error);
            Assert.True(status == ProxyParseStatus.Complete, $"{name} ({shape}): {error}");
            Assert.Equal(header.Length, consumed);
            Assert.Equal(version, parsed!.Version);
            Assert.Equal(source, parsed.Source?.ToString());
        }
    }

    [Theory]
    [MemberData(nameof(Valid))]
    public void EveryPrefixIsIncomplete(string name, byte[] header, string? source, int version)
    {
        _ = source;
        _ = version;
        for (int length = 0; length < header.Length; length++)
        {
            foreach (var (shape, sequence) in Sequences.Shapes(header[..length]))
            {
                var status = ProxyHeaderParser.TryParse(sequence, out _, out _, out int needed, out var error);
                Assert.True(status == ProxyParseStatus.Incomplete, $"{name}, {length} bytes ({shape}): {status} {error}");
                Assert.InRange(needed, 1, header.Length - length);
            }
        }
    }

    [Theory]
    [InlineData("EHLO client.example\r\n")]
    [InlineData("PROXY TCP4 192.0.2.10 198.51.100.1 50000\r\n")]
    [InlineData("PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n")]
    [InlineData("PROXY TCP4 192.0.2.010x 198.51.100.1 1 2\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.1 65536 2\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.1 1 2\n")]
    [InlineData("PROXY TCP5 192.0.2.1 198.51.100.1 1 2\r\n")]
    [InlineData("proxy TCP4 192.0.2.1 198.51.100.1 1 2\r\n")]
    public void RefusesBadV1(string text)
    {
        foreach (var (shape, sequence) in Sequences.Shapes(Encoding.ASCII.GetBytes(text)))
            Assert.True(ProxyHeaderParser.TryParse(sequence, out _, out _, out _, out _) == ProxyParseStatus.Error, shape);
    }

    [Fact]
    public void RefusesAV1LineWithoutEndWithin107Bytes()
    {
        var text = Encoding.ASCII.GetBytes("PROXY UNKNOWN " + new string('x', 120));
        Assert.Equal(ProxyParseStatus.Error, ProxyHeaderParser.TryParse(new ReadOnlySequence<byte>(text), out _, out _, out _, out _));
        Assert.Equal(ProxyParseStatus.Incomplete, ProxyHeaderParser.TryParse(new ReadOnlySequence<byte>(text[..106]), out _, out _, out _, out _));
    }

    [Fact]
    public void RefusesBadV2()
    {
        byte[] wrongVersion = [.. V2Tcp4];
        wrongVersion[12] = 0x11;
        byte[] udp = V2(1, 0x12, new byte[12]);
        byte[] shortBlock = V2(1, 0x11, new byte[8]);
        byte[] badSignature = [.. V2Tcp4];
        badSignature[5] = 0x00;
        foreach (var bad in new[] { wrongVersion, udp, shortBlock, badSignature })
            foreach (var (shape, sequence) in Sequences.Shapes(bad))
                Assert.True(ProxyHeaderParser.TryParse(sequence, out _, out _, out _, out _) == ProxyParseStatus.Error, shape);
    }

    [Fact]
    public void V2SaysHowManyBytesAreStillMissing()
    {
        Assert.Equal(ProxyParseStatus.Incomplete, ProxyHeaderParser.TryParse(new ReadOnlySequence<byte>(V2Tcp4[..16]), out _, out _, out int needed, out _));
        Assert.Equal(V2Tcp4.Length - 16, needed);
    }
}
