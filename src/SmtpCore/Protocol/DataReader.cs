// Message content reader for DATA (RFC 5321 §4.1.1.4, §4.5.2) and BDAT (RFC 3030).
// An incremental state machine fed with whatever bytes arrive, in any chunking:
//  - DATA ends at CRLF "." CRLF and nothing else (the first CRLF may be the one that ended
//    the DATA command). A '.' starting a line is removed (transparency, §4.5.2).
//  - A bare LF or bare CR is never a line end: it is either re-emitted as CRLF (normalize)
//    or latches an error while the reader drains to the real end (reject). Because the
//    output always has CRLF line endings and the downstream client dot-stuffs every line
//    start again, no input can make the downstream see a second message (SMTP smuggling,
//    CVE-2023-51764 family).
//  - Content past the size cap is dropped and latches an error; draining continues.
// The reader writes content to an IBufferWriter and never looks at it again.
using System.Buffers;

namespace Portcullis.SmtpCore.Protocol;

public enum BareNewlinePolicy { Normalize, Reject }

public enum DataError { None, TooLarge, BareNewline, WriteFailed }

public sealed class DataReader
{
    private enum State { LineStart, Mid, AfterCr, Dot, DotCr, Done }

    private readonly IBufferWriter<byte> _output;
    private readonly long _maxSize;
    private readonly BareNewlinePolicy _policy;
    private readonly bool _dotTransparency;
    private State _state;

    // dotTransparency: true for DATA (unstuff, look for the terminator), false for BDAT content.
    public DataReader(IBufferWriter<byte> output, long maxSize, BareNewlinePolicy policy, bool dotTransparency)
    {
        _output = output;
        _maxSize = maxSize;
        _policy = policy;
        _dotTransparency = dotTransparency;
        _state = dotTransparency ? State.LineStart : State.Mid;
    }

    public long Size { get; private set; }          // content bytes accepted (written or counted past the cap)
    public DataError Error { get; private set; }
    public Exception? WriteException { get; private set; }
    public bool IsComplete => _state == State.Done;

    // Consumes bytes up to and including the terminator; returns how many were consumed.
    // Bytes after the terminator (pipelined commands) are left to the caller.
    public int Process(ReadOnlySpan<byte> input)
    {
        int i = 0;
        while (i < input.Length && _state != State.Done)
        {
            switch (_state)
            {
                case State.Mid:
                {
                    var rest = input[i..];
                    int stop = rest.IndexOfAny((byte)'\r', (byte)'\n');
                    if (stop < 0) { Emit(rest); i = input.Length; break; }
                    Emit(rest[..stop]);
                    i += stop;
                    if (input[i] == (byte)'\r') { _state = State.AfterCr; i++; }
                    else { BareNewline(); i++; } // bare LF: not a line end, next '.' is ordinary
                    break;
                }
                case State.LineStart:
                {
                    byte b = input[i];
                    if (b == (byte)'.') { _state = State.Dot; i++; }
                    else _state = State.Mid;
                    break;
                }
                case State.Dot:
                {
                    byte b = input[i];
                    if (b == (byte)'\r') { _state = State.DotCr; i++; }
                    else _state = State.Mid; // the stuffed dot is dropped; b is processed as content
                    break;
                }
                case State.DotCr:
                {
                    if (input[i] == (byte)'\n') { _state = State.Done; i++; break; }
                    // ".\r" then something else: the dot was stuffing, the CR is bare.
                    BareNewline();
                    _state = State.Mid;
                    break;
                }
                case State.AfterCr:
                {
                    byte b = input[i];
                    if (b == (byte)'\n')
                    {
                        Emit("\r\n"u8);
                        _state = _dotTransparency ? State.LineStart : State.Mid;
                        i++;
                    }
                    else
                    {
                        BareNewline();
                        _state = b == (byte)'\r' ? State.AfterCr : State.Mid;
                        if (b == (byte)'\r') i++;
                    }
                    break;
                }
            }
        }
        return i;
    }

    // End of BDAT LAST: a CR still pending is a bare CR.
    public void Finish()
    {
        if (_dotTransparency) throw new InvalidOperationException("DATA ends at its terminator");
        if (_state == State.AfterCr) BareNewline();
        _state = State.Done;
    }

    private void BareNewline()
    {
        if (_policy == BareNewlinePolicy.Reject)
        {
            Latch(DataError.BareNewline);
            return;
        }
        Emit("\r\n"u8);
    }

    private void Latch(DataError error)
    {
        if (Error == DataError.None) Error = error;
    }

    private void Emit(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty) return;
        Size += bytes.Length;
        if (Error != DataError.None) return;
        if (Size > _maxSize)
        {
            Latch(DataError.TooLarge);
            return;
        }
        try
        {
            _output.Write(bytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Disk full while spilling, say: drain and answer 451 once.
            WriteException = e;
            Latch(DataError.WriteFailed);
        }
    }
}
