namespace Portcullis.SmtpCore;

// A finished message body as the downstream client reads it for forwarding: CRLF line endings,
// already dot-unstuffed (the client stuffs it again for DATA, or sends it as is with BDAT).
public interface IMessageContent
{
    long Length { get; }

    // Copies up to destination.Length bytes starting at offset; returns the count, 0 at the end.
    int Read(long offset, Span<byte> destination);
}
