// A reader for D. J. Bernstein's constant database format (cdb), as tcprules writes it:
// a 2048-byte header of 256 (position, slot count) pairs, records of (key length, data length,
// key, data), then 256 hash tables of (hash, record position) slots. All numbers are 32-bit
// little-endian. hash = 5381, then h = ((h << 5) + h) ^ byte; table = h & 255; first slot =
// (h >> 8) % slots, probing forward with wrap-around; a slot with position 0 ends the search.
using System.Buffers.Binary;

namespace Portcullis.Appliance.Access;

internal sealed class Cdb
{
    private const int HeaderSize = 2048;
    private readonly byte[] _data;

    public Cdb(byte[] data)
    {
        if (data.Length < HeaderSize) throw new InvalidDataException($"a cdb file is at least {HeaderSize} bytes; this one has {data.Length}");
        _data = data;
    }

    public static uint Hash(ReadOnlySpan<byte> key)
    {
        uint h = 5381;
        foreach (byte b in key) h = ((h << 5) + h) ^ b;
        return h;
    }

    // The data of the first record with this key (cdb returns the first of duplicates), or null.
    public byte[]? Find(ReadOnlySpan<byte> key)
    {
        uint h = Hash(key);
        int table = (int)(h & 255) * 8;
        uint tablePos = U32(table);
        uint slots = U32(table + 4);
        if (slots == 0) return null;
        uint slot = (h >> 8) % slots;
        for (uint n = 0; n < slots; n++)
        {
            long at = tablePos + (long)((slot + n) % slots) * 8;
            uint slotHash = U32(at);
            uint recordPos = U32(at + 4);
            if (recordPos == 0) return null;
            if (slotHash != h) continue;
            uint keyLength = U32(recordPos);
            uint dataLength = U32(recordPos + 4);
            long keyStart = recordPos + 8L;
            if (keyLength != key.Length) continue;
            Check(keyStart + keyLength + dataLength);
            if (!_data.AsSpan((int)keyStart, (int)keyLength).SequenceEqual(key)) continue;
            return _data.AsSpan((int)(keyStart + keyLength), (int)dataLength).ToArray();
        }
        return null;
    }

    private uint U32(long offset)
    {
        Check(offset + 4);
        return BinaryPrimitives.ReadUInt32LittleEndian(_data.AsSpan((int)offset, 4));
    }

    private void Check(long end)
    {
        if (end > _data.Length) throw new InvalidDataException("the cdb file is truncated or corrupt");
    }
}
