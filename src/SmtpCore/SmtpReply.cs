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
    public string ToWire()
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < Lines.Count; i++)
        {
            sb.Append(Code).Append(i == Lines.Count - 1 ? ' ' : '-');
            if (Enhanced is not null) sb.Append(Enhanced).Append(' ');
            sb.Append(Lines[i]).Append("\r\n");
        }
        return sb.ToString();
    }

    // The wire form as bytes, encoded on first use and kept: a reply held in a static (or built once
    // per server, SmtpServerOptions) costs no formatting or encoding when it is sent again.
    internal byte[] WireBytes => _wire ??= System.Text.Encoding.UTF8.GetBytes(ToWire());
    private byte[]? _wire;

    public override string ToString() => Enhanced is null ? $"{Code} {Text}" : $"{Code} {Enhanced} {Text}";
}
