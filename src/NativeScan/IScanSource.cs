namespace Portcullis.NativeScan;

// What libclamav reads a message from: random access over content that may live in pooled
// memory segments or in a spill file. Read is called from scanner threads through the fmap
// pread callback, possibly concurrently with nothing else touching the source.
public interface IScanSource
{
    long Length { get; }

    // Copies up to destination.Length bytes starting at offset; returns the count, 0 at the end.
    int Read(long offset, Span<byte> destination);
}
