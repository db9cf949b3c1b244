// DATA transparency (RFC 5321 §4.5.2): a '.' that starts a line is doubled. A line starts at
// the beginning of the data and after every LF (a bare LF too, so a stray "\n.\r\n" can never
// become an end-of-data marker downstream). Finish() makes the data end in CRLF and adds ".\r\n".
// Incremental: the content may arrive in chunks cut anywhere.
using System.Buffers;

namespace Portcullis.SmtpCore.Downstream;

internal sealed class DotStuffer
{
    private bool _midLine;
    private bool _any;
    private byte _last;
    private bool _endsWithCrLf;

    // Ready for the next message (a connection reuses its stuffer).
    public void Reset()
    {
        _midLine = false;
        _any = false;
        _last = 0;
        _endsWithCrLf = false;
    }

    public void Write(ReadOnlySpan<byte> source, IBufferWriter<byte> output)
    {
        while (!source.IsEmpty)
        {
            if (!_midLine && source[0] == (byte)'.') output.Write("."u8);
            int lf = source.IndexOf((byte)'\n');
            int take = lf < 0 ? source.Length : lf + 1;
            var run = source[..take];
            output.Write(run);

            _endsWithCrLf = run[^1] == (byte)'\n' && (run.Length >= 2 ? run[^2] : _last) == (byte)'\r';
            _last = run[^1];
            _any = true;
            _midLine = lf < 0;
            source = source[take..];
        }
    }

    // True when source needs no stuffing (no line in it starts with "."): the caller writes it as
    // it is and the state moves on as if Write had; false (state unchanged) otherwise.
    public bool TryPassThrough(ReadOnlySpan<byte> source)
    {
        if (source.IsEmpty) return true;
        if (!_midLine && source[0] == (byte)'.') return false;
        if (source.IndexOf("\n."u8) >= 0) return false;
        byte before = source.Length >= 2 ? source[^2] : _last;
        _endsWithCrLf = source[^1] == (byte)'\n' && before == (byte)'\r';
        _last = source[^1];
        _any = true;
        _midLine = source[^1] != (byte)'\n';
        return true;
    }

    public void Finish(IBufferWriter<byte> output)
    {
        // Empty data needs no CRLF: ".\r\n" right after the 354 is an empty message.
        if (_any && !_endsWithCrLf) output.Write("\r\n"u8);
        output.Write(".\r\n"u8);
        _midLine = false;
        _any = false;
        _last = 0;
        _endsWithCrLf = false;
    }
}
