// The PROXY protocol header a load balancer (HAProxy) puts before the client's bytes, versions
// 1 (text) and 2 (binary), as specified in HAProxy's proxy-protocol.txt. Pure: parses from a
// ReadOnlySequence and does no I/O. Any prefix of a valid header is Incomplete; the first byte
// that cannot belong to a header is an Error, so a client speaking SMTP straight away is refused
// at once. Version 1: "PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n", at most 107 bytes.
// Version 2: a 12-byte signature, version/command, family/protocol, 16-bit length, addresses, TLVs.
using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.SmtpCore.Protocol;

// Source is the real client; null when the header says LOCAL or UNKNOWN (keep the socket's peer).
public sealed record ProxyHeader(int Version, IPEndPoint? Source, IPEndPoint? Destination);

public enum ProxyParseStatus { Incomplete, Complete, Error }

public static class ProxyHeaderParser
{
    public const int MaxV1Length = 107;
    private const int V2HeaderLength = 16;
    private static ReadOnlySpan<byte> V1Prefix => "PROXY "u8;
    private static ReadOnlySpan<byte> V2Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    // consumed: the header's length when Complete. needed: when Incomplete, the least number of
    // further bytes that can change the answer (a reader may fetch exactly that many).
    public static ProxyParseStatus TryParse(in ReadOnlySequence<byte> buffer, out ProxyHeader? header, out int consumed,
        out int needed, out string error)
    {
        header = null;
        consumed = 0;
        needed = 1;
        error = "";
        Span<byte> start = stackalloc byte[V2HeaderLength];
        int have = (int)Math.Min(buffer.Length, V2HeaderLength);
        buffer.Slice(0, have).CopyTo(start);
        start = start[..have];
        if (have == 0) return ProxyParseStatus.Incomplete;

        if (start[0] == V1Prefix[0])
        {
            int n = Math.Min(have, V1Prefix.Length);
            if (!start[..n].SequenceEqual(V1Prefix[..n])) return Fail("not a PROXY protocol header", out error);
            return ParseV1(buffer, out header, out consumed, out error);
        }
        if (start[0] == V2Signature[0])
        {
            int n = Math.Min(have, V2Signature.Length);
            if (!start[..n].SequenceEqual(V2Signature[..n])) return Fail("not a PROXY protocol header", out error);
            if (have < V2HeaderLength)
            {
                needed = V2HeaderLength - have;
                return ProxyParseStatus.Incomplete;
            }
            return ParseV2(buffer, start, out header, out consumed, out needed, out error);
        }
        return Fail("not a PROXY protocol header", out error);
    }

    private static ProxyParseStatus ParseV1(in ReadOnlySequence<byte> buffer, out ProxyHeader? header, out int consumed, out string error)
    {
        header = null;
        consumed = 0;
        error = "";
        var window = buffer.Slice(0, Math.Min(buffer.Length, MaxV1Length));
        var lf = window.PositionOf((byte)'\n');
        if (lf is null)
            return window.Length >= MaxV1Length ? Fail("PROXY v1 header longer than 107 bytes", out error) : ProxyParseStatus.Incomplete;
        var lineWithLf = window.Slice(0, buffer.GetPosition(1, lf.Value));
        int length = (int)lineWithLf.Length;
        Span<byte> bytes = stackalloc byte[MaxV1Length];
        lineWithLf.CopyTo(bytes);
        var line = bytes[..length];
        if (length < 2 || line[^2] != (byte)'\r') return Fail("PROXY v1 header must end with CRLF", out error);
        foreach (byte b in line[..^2])
            if (b is < 0x20 or > 0x7e) return Fail("PROXY v1 header has a control or non-ASCII byte", out error);
        var fields = Encoding.ASCII.GetString(line[..^2]).Split(' ');
        consumed = length;
        if (fields.Length >= 2 && fields[1] == "UNKNOWN")
        {
            header = new ProxyHeader(1, null, null);
            return ProxyParseStatus.Complete;
        }
        if (fields.Length != 6 || fields[1] is not ("TCP4" or "TCP6"))
            return Fail("PROXY v1 header must be PROXY TCP4|TCP6 src dst sport dport or PROXY UNKNOWN", out error);
        var family = fields[1] == "TCP4" ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6;
        if (!TryAddress(fields[2], family, out var src) || !TryAddress(fields[3], family, out var dst)
            || !TryPort(fields[4], out int sport) || !TryPort(fields[5], out int dport))
            return Fail("PROXY v1 header has a bad address or port", out error);
        header = new ProxyHeader(1, new IPEndPoint(src!, sport), new IPEndPoint(dst!, dport));
        return ProxyParseStatus.Complete;
    }

    private static ProxyParseStatus ParseV2(in ReadOnlySequence<byte> buffer, ReadOnlySpan<byte> fixedPart, out ProxyHeader? header,
        out int consumed, out int needed, out string error)
    {
        header = null;
        consumed = 0;
        needed = 1;
        error = "";
        byte versionCommand = fixedPart[12];
        byte familyProtocol = fixedPart[13];
        int length = BinaryPrimitives.ReadUInt16BigEndian(fixedPart[14..]);
        if (versionCommand >> 4 != 2) return Fail("PROXY v2 header with an unknown version", out error);
        int command = versionCommand & 0x0F;
        if (command > 1) return Fail("PROXY v2 header with an unknown command", out error);
        int total = V2HeaderLength + length;
        if (buffer.Length < total)
        {
            needed = total - (int)buffer.Length;
            return ProxyParseStatus.Incomplete;
        }
        consumed = total;
        if (command == 0)
        {
            // LOCAL: the balancer's own health check; the connection's endpoints are the real ones.
            header = new ProxyHeader(2, null, null);
            return ProxyParseStatus.Complete;
        }
        var body = buffer.Slice(V2HeaderLength, length).ToArray();
        switch (familyProtocol)
        {
            case 0x00: // UNSPEC: addresses unknown
                header = new ProxyHeader(2, null, null);
                return ProxyParseStatus.Complete;
            case 0x11: // TCP over IPv4
                if (length < 12) return Fail("PROXY v2 TCP4 address block is too short", out error);
                header = new ProxyHeader(2,
                    new IPEndPoint(new IPAddress(body.AsSpan(0, 4)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(8))),
                    new IPEndPoint(new IPAddress(body.AsSpan(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(10))));
                return ProxyParseStatus.Complete;
            case 0x21: // TCP over IPv6
                if (length < 36) return Fail("PROXY v2 TCP6 address block is too short", out error);
                header = new ProxyHeader(2,
                    new IPEndPoint(new IPAddress(body.AsSpan(0, 16)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(32))),
                    new IPEndPoint(new IPAddress(body.AsSpan(16, 16)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(34))));
                return ProxyParseStatus.Complete;
            default:
                consumed = 0;
                return Fail($"PROXY v2 header for a transport other than TCP (0x{familyProtocol:x2})", out error);
        }
    }

    private static bool TryAddress(string text, AddressFamily family, out IPAddress? address)
    {
        address = null;
        if (text.Length == 0 || text.Contains('%')) return false;
        if (family == AddressFamily.InterNetwork)
        {
            // Dotted quad only: IPAddress.TryParse also takes "1", "0x7f.1" and other historic forms.
            var parts = text.Split('.');
            if (parts.Length != 4 || parts.Any(p => p.Length is 0 or > 3 || !p.All(char.IsAsciiDigit) || int.Parse(p, System.Globalization.CultureInfo.InvariantCulture) > 255))
                return false;
        }
        else if (!text.All(c => char.IsAsciiHexDigit(c) || c is ':' or '.')) return false;
        return IPAddress.TryParse(text, out address) && address.AddressFamily == family;
    }

    private static bool TryPort(string text, out int port)
    {
        port = 0;
        return text.Length is >= 1 and <= 5 && text.All(char.IsAsciiDigit)
            && int.TryParse(text, System.Globalization.NumberStyles.None, null, out port) && port <= 65535;
    }

    private static ProxyParseStatus Fail(string message, out string error)
    {
        error = message;
        return ProxyParseStatus.Error;
    }
}
