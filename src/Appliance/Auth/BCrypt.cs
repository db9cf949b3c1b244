// bcrypt ("$2b$", "$2y$", "$2a$"; Provos and Mazières, "A Future-Adaptable Password Scheme",
// 1999): EksBlowfish with 2^cost rounds of key expansion, then "OrpheanBeholderScryDoubt"
// encrypted 64 times. $2y$cost$ + 22 characters of salt (16 bytes) + 31 of hash (23 bytes), in
// bcrypt's base-64 alphabet. The key is the password's bytes with a terminating NUL, at most 72.
// Blowfish's initial P-array and S-boxes are the fractional hexadecimal digits of pi: they are
// computed here once (Machin's formula in integers) instead of being copied as a table.
using System.Buffers.Binary;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;

namespace Portcullis.Appliance.Auth;

internal static class BCrypt
{
    private const string Alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    private static readonly Lazy<uint[]> PiWords = new(ComputePiWords);

    public static bool IsBCrypt(string hash) =>
        hash.Length == 60 && hash[0] == '$' && hash[1] == '2' && hash[2] is 'a' or 'b' or 'y' && hash[3] == '$' && hash[6] == '$';

    public static string? Hash(string password, string setting)
    {
        if (setting.Length < 29 || !(setting[0] == '$' && setting[1] == '2' && setting[2] is 'a' or 'b' or 'y' && setting[3] == '$' && setting[6] == '$'))
            return null;
        if (!int.TryParse(setting.AsSpan(4, 2), System.Globalization.NumberStyles.None, null, out int cost) || cost is < 4 or > 31) return null;
        string saltText = setting.Substring(7, 22);
        var salt = Decode(saltText, 16);
        if (salt is null) return null;

        byte[] utf8 = Encoding.UTF8.GetBytes(password);
        byte[] key = new byte[Math.Min(utf8.Length + 1, 72)];
        utf8.AsSpan(0, Math.Min(utf8.Length, 72)).CopyTo(key);

        var state = new Blowfish(PiWords.Value);
        state.ExpandKey(salt, key);
        for (long i = 1L << cost; i > 0; i--)
        {
            state.ExpandKey(null, key);
            state.ExpandKey(null, salt);
        }

        byte[] magic = "OrpheanBeholderScryDoubt"u8.ToArray();
        var text = new uint[6];
        for (int i = 0; i < 6; i++) text[i] = BinaryPrimitives.ReadUInt32BigEndian(magic.AsSpan(i * 4));
        for (int round = 0; round < 64; round++)
            for (int i = 0; i < 6; i += 2) state.Encrypt(ref text[i], ref text[i + 1]);
        var output = new byte[24];
        for (int i = 0; i < 6; i++) BinaryPrimitives.WriteUInt32BigEndian(output.AsSpan(i * 4), text[i]);

        return setting[..7] + saltText + Encode(output.AsSpan(0, 23));
    }

    public static bool Verify(string password, string hash) =>
        IsBCrypt(hash) && Hash(password, hash) is { } computed
        && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(computed), Encoding.ASCII.GetBytes(hash));

    internal static string Encode(ReadOnlySpan<byte> data)
    {
        var sb = new StringBuilder((data.Length * 4 + 2) / 3);
        int i = 0;
        while (i < data.Length)
        {
            int c1 = data[i++];
            sb.Append(Alphabet[c1 >> 2]);
            c1 = (c1 & 0x03) << 4;
            if (i >= data.Length) { sb.Append(Alphabet[c1]); break; }
            int c2 = data[i++];
            sb.Append(Alphabet[c1 | (c2 >> 4)]);
            c1 = (c2 & 0x0f) << 2;
            if (i >= data.Length) { sb.Append(Alphabet[c1]); break; }
            c2 = data[i++];
            sb.Append(Alphabet[c1 | (c2 >> 6)]);
            sb.Append(Alphabet[c2 & 0x3f]);
        }
        return sb.ToString();
    }

    internal static byte[]? Decode(string text, int length)
    {
        var result = new byte[length];
        int bits = 0, value = 0, n = 0;
        foreach (char c in text)
        {
            int digit = Alphabet.IndexOf(c);
            if (digit < 0) return null;
            value = (value << 6) | digit;
            bits += 6;
            if (bits >= 8)
            {
                bits -= 8;
                if (n < length) result[n++] = (byte)(value >> bits);
                value &= (1 << bits) - 1;
            }
        }
        return n == length ? result : null;
    }

    // 18 P-array words then 4 × 256 S-box words: the first 8336 hex digits of pi after the point.
    private static uint[] ComputePiWords()
    {
        const int words = 18 + 4 * 256;
        int bits = words * 32 + 64;
        var one = BigInteger.One << bits;
        // pi = 16 arctan(1/5) - 4 arctan(1/239)
        var pi = 16 * ArctanInverse(5, one) - 4 * ArctanInverse(239, one);
        var fraction = pi - (3 * one);
        var result = new uint[words];
        for (int i = 0; i < words; i++)
            result[i] = (uint)((fraction >> (bits - 32 * (i + 1))) & uint.MaxValue);
        return result;
    }

    private static BigInteger ArctanInverse(int x, BigInteger one)
    {
        BigInteger x2 = x * x;
        BigInteger term = one / x;
        BigInteger sum = term;
        int sign = -1;
        for (int n = 3; !term.IsZero; n += 2)
        {
            term /= x2;
            sum += sign * (term / n);
            sign = -sign;
        }
        return sum;
    }

    private sealed class Blowfish
    {
        private readonly uint[] _p = new uint[18];
        private readonly uint[] _s = new uint[1024];

        public Blowfish(uint[] pi)
        {
            Array.Copy(pi, 0, _p, 0, 18);
            Array.Copy(pi, 18, _s, 0, 1024);
        }

        private uint F(uint x) =>
            ((_s[x >> 24] + _s[256 + ((x >> 16) & 0xff)]) ^ _s[512 + ((x >> 8) & 0xff)]) + _s[768 + (x & 0xff)];

        public void Encrypt(ref uint left, ref uint right)
        {
            uint l = left ^ _p[0], r = right;
            for (int i = 1; i <= 16; i += 2)
            {
                r ^= F(l) ^ _p[i];
                l ^= F(r) ^ _p[i + 1];
            }
            left = r ^ _p[17];
            right = l;
        }

        // Blowfish key schedule with bcrypt's salt: the key is XORed into P cyclically, then P and
        // the S-boxes are replaced by successive encryptions of a block that is first XORed with
        // the next 64 bits of the salt (no salt: the plain Blowfish schedule).
        public void ExpandKey(byte[]? salt, byte[] key)
        {
            int keyPos = 0;
            for (int i = 0; i < 18; i++) _p[i] ^= StreamWord(key, ref keyPos);
            uint l = 0, r = 0;
            int saltPos = 0;
            for (int i = 0; i < 18; i += 2)
            {
                if (salt is not null) { l ^= StreamWord(salt, ref saltPos); r ^= StreamWord(salt, ref saltPos); }
                Encrypt(ref l, ref r);
                _p[i] = l;
                _p[i + 1] = r;
            }
            for (int i = 0; i < 1024; i += 2)
            {
                if (salt is not null) { l ^= StreamWord(salt, ref saltPos); r ^= StreamWord(salt, ref saltPos); }
                Encrypt(ref l, ref r);
                _s[i] = l;
                _s[i + 1] = r;
            }
        }

        private static uint StreamWord(byte[] data, ref int pos)
        {
            uint word = 0;
            for (int i = 0; i < 4; i++)
            {
                word = (word << 8) | data[pos];
                pos = (pos + 1) % data.Length;
            }
            return word;
        }
    }
}
