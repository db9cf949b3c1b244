using System.Buffers;

namespace Portcullis.SmtpCore;

// One SMTP reply (RFC 5321 §4.2): a three-digit code, an optional enhanced status code
// (RFC 3463, e.g. "5.7.1"), and one or more text lines.
public sealed class SmtpReply
{
    public SmtpReply(int code, string? enhanced, params string[] lines)
    {
        if (code is < 200 or > 599) throw new ArgumentOutOfRangeException(nameof(code));
        Code = code;
        Enhanced = enhanced;
        Lines = lines.Length == 0 ? [""] : lines;
    }

    public int Code { get; }
    public string? Enhanced { get; }
    public IReadOnlyList<string> Lines { get; }

    public bool IsPositive => Code < 400;          // 2xx or 3xx
    public bool IsPositiveCompletion => Code is >= 200 and < 300;
    public bool IsTransient => Code is >= 400 and < 500;
    public bool IsPermanent => Code >= 500;

    public string Text => string.Join(" ", Lines);

    // Wire form, CRLF-terminated lines: "250-first\r\n250 2.0.0 last\r\n".
    public string ToWire() => System.Text.Encoding.UTF8.GetString(WireBytes);

    // The wire form as bytes, encoded on first use and kept: a reply held in a static (or built once
    // per server, SmtpServerOptions) costs no formatting or encoding when it is sent again.
    internal byte[] WireBytes => _wire ??= Encode();
    private byte[]? _wire;
    private bool _written;

    private byte[] Encode()
    {
        var buffer = new ArrayBufferWriter<byte>();
        WriteLines(buffer);
        return buffer.WrittenSpan.ToArray();
    }

    // Sends the wire form. A reply sent for the first time (most are made for one answer: a
    // downstream reply passed on) is encoded straight into the output; one sent again keeps its bytes.
    internal void WriteTo(IBufferWriter<byte> output)
    {
        if (_wire is not null || _written)
        {
            output.Write(WireBytes);
            return;
        }
        _written = true;
        WriteLines(output);
    }

    // The one place the wire form is made.
    private void WriteLines(IBufferWriter<byte> output)
    {
        for (int i = 0; i < Lines.Count; i++)
        {
            string line = Lines[i];
            int most = 4 + (Enhanced is null ? 0 : System.Text.Encoding.UTF8.GetMaxByteCount(Enhanced.Length) + 1)
                + System.Text.Encoding.UTF8.GetMaxByteCount(line.Length) + 2;
            var span = output.GetSpan(most);
            span[0] = (byte)('0' + Code / 100);
            span[1] = (byte)('0' + Code / 10 % 10);
            span[2] = (byte)('0' + Code % 10);
            span[3] = (byte)(i == Lines.Count - 1 ? ' ' : '-');
            int at = 4;
            if (Enhanced is not null)
            {
                at += System.Text.Encoding.UTF8.GetBytes(Enhanced, span[at..]);
                span[at++] = (byte)' ';
            }
            at += System.Text.Encoding.UTF8.GetBytes(line, span[at..]);
            span[at++] = (byte)'\r';
            span[at++] = (byte)'\n';
            output.Advance(at);
        }
    }

    public override string ToString() => Enhanced is null ? $"{Code} {Text}" : $"{Code} {Enhanced} {Text}";
}
