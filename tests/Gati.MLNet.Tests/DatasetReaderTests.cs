using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

public sealed class DatasetReaderTests : IDisposable
{
    private readonly TempDirectory _temp = new();
    private readonly MLContext _ml = new(seed: 1);

    public void Dispose() => _temp.Dispose();

    private static List<(float[] Image, uint Label)> ReadAll(IDataView data, Random? rand = null)
    {
        var rows = new List<(float[], uint)>();
        using var cursor = data.GetRowCursor(data.Schema, rand);
        var image = cursor.GetGetter<VBuffer<float>>(data.Schema["Image"]);
        var label = cursor.GetGetter<uint>(data.Schema["Label"]);
        VBuffer<float> pixels = default;
        uint key = 0;
        while (cursor.MoveNext())
        {
            image(ref pixels);
            label(ref key);
            rows.Add((pixels.DenseValues().ToArray(), key));
        }
        return rows;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void LoadFashionMnist_IdxFiles_StreamsNormalisedPixelsAndKeyLabels(bool gzip)
    {
        var (images, labels) = DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 12, gzip);
        var data = _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path);

        Assert.Equal(12, data.GetRowCount());
        var imageType = Assert.IsType<VectorDataViewType>(data.Schema["Image"].Type);
        Assert.Equal([1, 28, 28], imageType.Dimensions.ToArray());
        var labelType = Assert.IsType<KeyDataViewType>(data.Schema["Label"].Type);
        Assert.Equal(10UL, labelType.Count);
        VBuffer<ReadOnlyMemory<char>> names = default;
        data.Schema["Label"].Annotations.GetValue("KeyValues", ref names);
        Assert.Equal(FashionMnist.ClassNames, names.DenseValues().Select(n => n.ToString()));
        Assert.Equal(!gzip, data.CanShuffle);

        var rows = ReadAll(data);
        Assert.Equal(12, rows.Count);
        for (var i = 0; i < rows.Count; i++)
        {
            Assert.Equal(labels[i] + 1u, rows[i].Label);
            for (var p = 0; p < 784; p += 97)
                Assert.Equal((images[i][p] / 255f - 0.2860f) / 0.3530f, rows[i].Image[p], 5);
        }
    }

    [Fact]
    public void LoadFashionMnist_ShuffledCursorOnPlainFiles_ReturnsEveryRowOnceInAnotherOrder()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "train", 40, gzip: false);
        var data = _ml.Data.LoadFashionMnist(DatasetSplit.Train, _temp.Path);
        var ordered = ReadAll(data);
        var shuffled = ReadAll(data, new Random(3));
        Assert.NotEqual(ordered.Select(r => r.Image[0]), shuffled.Select(r => r.Image[0]));
        Assert.Equal(ordered.Select(r => (r.Image[5], r.Label)).Order(), shuffled.Select(r => (r.Image[5], r.Label)).Order());
    }

    [Fact]
    public void LoadFashionMnist_TruncatedGzip_NamesTheFile()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 50, gzip: true);
        var images = Path.Combine(_temp.Path, "t10k-images-idx3-ubyte.gz");
        DatasetFiles.Truncate(images, new FileInfo(images).Length / 2);
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));
        Assert.Equal(images, error.FilePath);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void LoadFashionMnist_TruncatedPlainFile_NamesTheFileAndSize()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 5, gzip: false);
        var images = Path.Combine(_temp.Path, "t10k-images-idx3-ubyte");
        DatasetFiles.Truncate(images, 16 + 784 * 4 + 100);
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));
        Assert.Contains(images, error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void LoadFashionMnist_LabelAndImageCountsDiffer_SaysTheFilesDoNotBelongTogether()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 5, gzip: false);
        DatasetFiles.WriteIdxLabels(Path.Combine(_temp.Path, "t10k-labels-idx1-ubyte"), [1, 2, 3], gzip: false);
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));
        Assert.Contains("3 labels", error.Message);
        Assert.Contains("5 images", error.Message);
    }

    [Fact]
    public void LoadFashionMnist_NotAnIdxFile_ReportsBadMagic()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 5, gzip: false);
        var labels = Path.Combine(_temp.Path, "t10k-labels-idx1-ubyte");
        File.WriteAllText(labels, "this is not an IDX file at all");
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));
        Assert.Equal(labels, error.FilePath);
        Assert.Contains("not an IDX file", error.Message);
    }

    [Fact]
    public void LoadFashionMnist_UnknownClassLabel_FailsOnReadNamingRecord()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 5, gzip: true);
        DatasetFiles.WriteIdxLabels(Path.Combine(_temp.Path, "t10k-labels-idx1-ubyte.gz"), [1, 2, 10, 3, 4], gzip: true);
        var data = _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path);
        var error = Assert.Throws<DatasetFormatException>(() => ReadAll(data));
        Assert.Contains("label 2 is 10", error.Message);
        Assert.EndsWith("t10k-labels-idx1-ubyte.gz", error.FilePath);
    }

    [Theory]
    [InlineData("t10k-labels-idx1-ubyte.gz", "trailer-crc")]
    [InlineData("t10k-images-idx3-ubyte.gz", "trailer-crc")]
    [InlineData("t10k-images-idx3-ubyte.gz", "deflate-data")]
    public void LoadFashionMnist_CorruptGzipStream_ThrowsDatasetFormatExceptionNamingTheFile(string file, string corruption)
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 50, gzip: true);
        var path = Path.Combine(_temp.Path, file);
        var bytes = File.ReadAllBytes(path);
        if (corruption == "trailer-crc") bytes[^8] ^= 0x5A;
        else for (var i = bytes.Length / 2; i < bytes.Length / 2 + 16; i++) bytes[i] ^= 0xA5;
        File.WriteAllBytes(path, bytes);

        var error = Record.Exception(() => ReadAll(_ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path)));

        var format = Assert.IsType<DatasetFormatException>(error);
        Assert.Equal(path, format.FilePath);
        Assert.Contains("gzip", format.Problem);
    }

    [Fact]
    public void LoadFashionMnist_HeaderDimensionsOverflow_ThrowsDatasetFormatException()
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 2, gzip: false);
        var images = Path.Combine(_temp.Path, "t10k-images-idx3-ubyte");
        File.WriteAllBytes(images, DatasetFiles.Idx([2, 65536, 65536], new byte[64]));

        var error = Record.Exception(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));

        var format = Assert.IsType<DatasetFormatException>(error);
        Assert.Equal(images, format.FilePath);
        Assert.Contains("2x65536x65536", format.Problem);
    }

    [Theory]
    [InlineData(14, 14)]
    [InlineData(28, 32)]
    public void LoadFashionMnist_ImagesNot28x28_AreRejected(int height, int width)
    {
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 3, gzip: false);
        var images = Path.Combine(_temp.Path, "t10k-images-idx3-ubyte");
        DatasetFiles.WriteIdxImages(images, [new byte[height * width], new byte[height * width], new byte[height * width]], height, width, gzip: false);

        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));

        Assert.Equal(images, error.FilePath);
        Assert.Contains($"{height}x{width}", error.Problem);
        Assert.Contains("28x28", error.Problem);
    }

    [Fact]
    public void LoadFashionMnist_GzipHeaderFarLargerThanItsContent_FailsAtOpenWithBoundedMemory()
    {
        // 3 x 28 x 28 of real data behind a header claiming 50 million images, with the gzip trailer's length
        // (mod 2^32) forged to agree with the header: only the real stream length can tell.
        DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 3, gzip: true);
        var images = Path.Combine(_temp.Path, "t10k-images-idx3-ubyte.gz");
        const int claimed = 50_000_000;
        var bytes = DatasetFiles.Gzip(DatasetFiles.Idx([claimed, 28, 28], new byte[3 * 784]));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(bytes.Length - 4), unchecked((uint)(16 + (long)claimed * 784)));
        File.WriteAllBytes(images, bytes);

        var before = GC.GetAllocatedBytesForCurrentThread();
        var error = Record.Exception(() => _ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        var format = Assert.IsType<DatasetFormatException>(error);
        Assert.Equal(images, format.FilePath);
        Assert.Contains("truncated", format.Problem);
        Assert.True(allocated < 16 << 20, $"allocated {allocated} bytes to reject a {bytes.Length}-byte file");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(5)]
    public void LoadFashionMnist_MultiMemberGzip_ReadsEveryMember(int members)
    {
        var (images, labels) = DatasetFiles.WriteFashionMnistSplit(_temp.Path, "t10k", 20, gzip: true);
        File.WriteAllBytes(Path.Combine(_temp.Path, "t10k-images-idx3-ubyte.gz"),
            DatasetFiles.Gzip(DatasetFiles.Idx([20, 28, 28], images.SelectMany(i => i).ToArray()), members));
        File.WriteAllBytes(Path.Combine(_temp.Path, "t10k-labels-idx1-ubyte.gz"), DatasetFiles.Gzip(DatasetFiles.Idx([20], labels), members));

        var rows = ReadAll(_ml.Data.LoadFashionMnist(DatasetSplit.Test, _temp.Path));

        Assert.Equal(labels.Select(l => l + 1u), rows.Select(r => r.Label));
        Assert.Equal((images[19][783] / 255f - 0.2860f) / 0.3530f, rows[19].Image[783], 5);
    }

    [Fact]
    public void LoadFashionMnist_MissingFolder_SaysHowToInstall()
    {
        var error = Assert.Throws<DirectoryNotFoundException>(() => _ml.Data.LoadFashionMnist(DatasetSplit.Train, _temp.File("nope")));
        Assert.Contains("dataset-fashion-mnist", error.Message);
    }

    [Fact]
    public void LoadFashionMnist_RealDebianPackage_HasThePublishedSplits()
    {
        var dir = RealData.FashionMnistDirectory;
        var train = _ml.Data.LoadFashionMnist(DatasetSplit.Train, dir);
        var test = _ml.Data.LoadFashionMnist(DatasetSplit.Test, dir);
        Assert.Equal(60000, train.GetRowCount());
        Assert.Equal(10000, test.GetRowCount());
        var first = ReadAll(_ml.Data.TakeRows(test, 3));
        // The published test set starts with an ankle boot, a pullover and a trouser.
        Assert.Equal([10u, 3u, 2u], first.Select(r => r.Label));
        var labels = new int[10];
        using var cursor = test.GetRowCursor([test.Schema["Label"]]);
        var getter = cursor.GetGetter<uint>(test.Schema["Label"]);
        uint key = 0;
        while (cursor.MoveNext())
        {
            getter(ref key);
            labels[key - 1]++;
        }
        Assert.All(labels, count => Assert.Equal(1000, count));
    }

    private string WriteCifar10(string root, int perBatch, bool meta = true)
    {
        var dir = Path.Combine(root, "cifar-10-batches-bin");
        Directory.CreateDirectory(dir);
        var seed = 0;
        for (var b = 1; b <= 5; b++)
            DatasetFiles.WriteCifar(Path.Combine(dir, $"data_batch_{b}.bin"),
                Enumerable.Range(0, perBatch).Select(_ => (new[] { (byte)(seed % 10) }, DatasetFiles.CifarPixels(seed++))).ToArray());
        DatasetFiles.WriteCifar(Path.Combine(dir, "test_batch.bin"),
            Enumerable.Range(0, perBatch).Select(i => (new[] { (byte)((i + 3) % 10) }, DatasetFiles.CifarPixels(1000 + i))).ToArray());
        if (meta) File.WriteAllLines(Path.Combine(dir, "batches.meta.txt"), [.. Data.Cifar.Cifar10ClassNames.Select(n => n.ToUpperInvariant()), "", ""]);
        return dir;
    }

    [Fact]
    public void LoadCifar10_BinaryBatches_ReadsAllFiveTrainingFilesInOrderWithPlanarPixels()
    {
        WriteCifar10(_temp.Path, perBatch: 4);
        var train = _ml.Data.LoadCifar10(_temp.Path, DatasetSplit.Train);
        Assert.Equal(20, train.GetRowCount());
        Assert.True(train.CanShuffle);
        Assert.Equal([3, 32, 32], ((VectorDataViewType)train.Schema["Image"].Type).Dimensions.ToArray());
        VBuffer<ReadOnlyMemory<char>> names = default;
        train.Schema["Label"].Annotations.GetValue("KeyValues", ref names);
        Assert.Equal("AIRPLANE", names.GetValues()[0].ToString());

        var rows = ReadAll(train);
        var norm = ChannelNormalization.Cifar10;
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal((uint)(i % 10) + 1, rows[i].Label);
            var pixels = DatasetFiles.CifarPixels(i);
            foreach (var p in new[] { 0, 1023, 1024, 2047, 2048, 3071 })
            {
                var c = p / 1024;
                Assert.Equal((pixels[p] / 255f - norm.Mean[c]) / norm.Std[c], rows[i].Image[p], 5);
            }
        }
        var test = ReadAll(_ml.Data.LoadCifar10(Path.Combine(_temp.Path, "cifar-10-batches-bin"), DatasetSplit.Test));
        Assert.Equal([4u, 5u, 6u, 7u], test.Select(r => r.Label));
    }

    [Fact]
    public void LoadCifar10_ShuffledCursor_CrossesFileBoundaries()
    {
        WriteCifar10(_temp.Path, perBatch: 3);
        var train = _ml.Data.LoadCifar10(_temp.Path, DatasetSplit.Train);
        var shuffled = ReadAll(train, new Random(7));
        Assert.Equal(15, shuffled.Count);
        Assert.Equal(ReadAll(train).Select(r => r.Image[0]).Order(), shuffled.Select(r => r.Image[0]).Order());
    }

    [Fact]
    public void LoadCifar10_TruncatedBatch_NamesFileAndRecordSize()
    {
        var dir = WriteCifar10(_temp.Path, perBatch: 3);
        var batch = Path.Combine(dir, "data_batch_3.bin");
        DatasetFiles.Truncate(batch, 3073 * 2 + 1000);
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadCifar10(_temp.Path, DatasetSplit.Train));
        Assert.Equal(batch, error.FilePath);
        Assert.Contains("3073-byte records", error.Message);
    }

    [Fact]
    public void LoadCifar10_LabelOutOfRange_FailsOnReadNamingFile()
    {
        var dir = WriteCifar10(_temp.Path, perBatch: 2);
        DatasetFiles.WriteCifar(Path.Combine(dir, "test_batch.bin"), [([1], DatasetFiles.CifarPixels(1)), ([12], DatasetFiles.CifarPixels(2))]);
        var test = _ml.Data.LoadCifar10(_temp.Path, DatasetSplit.Test);
        var error = Assert.Throws<DatasetFormatException>(() => ReadAll(test));
        Assert.Contains("record 1 has label 12", error.Message);
    }

    [Fact]
    public void LoadCifar10_MetaFileWithWrongClassCount_IsRejected()
    {
        var dir = WriteCifar10(_temp.Path, perBatch: 1);
        File.WriteAllLines(Path.Combine(dir, "batches.meta.txt"), ["a", "b", "c"]);
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadCifar10(dir, DatasetSplit.Test));
        Assert.Contains("3 class names, expected 10", error.Message);
    }

    [Fact]
    public void LoadCifar10_MissingBatchFile_NamesIt()
    {
        var dir = WriteCifar10(_temp.Path, perBatch: 1, meta: false);
        File.Delete(Path.Combine(dir, "data_batch_5.bin"));
        var error = Assert.Throws<FileNotFoundException>(() => _ml.Data.LoadCifar10(dir, DatasetSplit.Train));
        Assert.Contains("data_batch_5.bin", error.Message);
    }

    [Theory]
    [InlineData(Cifar100LabelKind.Fine, 100)]
    [InlineData(Cifar100LabelKind.Coarse, 20)]
    public void LoadCifar100_FineAndCoarseLabels_ComeFromTheirOwnBytes(Cifar100LabelKind kind, int classes)
    {
        var dir = Path.Combine(_temp.Path, "cifar-100-binary");
        Directory.CreateDirectory(dir);
        var records = Enumerable.Range(0, 6).Select(i => (new[] { (byte)(i % 20), (byte)(50 + i) }, DatasetFiles.CifarPixels(i))).ToArray();
        DatasetFiles.WriteCifar(Path.Combine(dir, "test.bin"), records);
        DatasetFiles.WriteCifar(Path.Combine(dir, "train.bin"), records);
        File.WriteAllLines(Path.Combine(dir, "coarse_label_names.txt"), Enumerable.Range(0, 20).Select(i => $"super{i}"));

        var data = _ml.Data.LoadCifar100(_temp.Path, DatasetSplit.Test, kind);
        Assert.Equal((ulong)classes, ((KeyDataViewType)data.Schema["Label"].Type).Count);
        var rows = ReadAll(data);
        for (var i = 0; i < 6; i++)
            Assert.Equal(kind == Cifar100LabelKind.Fine ? 51u + (uint)i : (uint)(i % 20) + 1, rows[i].Label);
        if (kind == Cifar100LabelKind.Coarse)
        {
            VBuffer<ReadOnlyMemory<char>> names = default;
            data.Schema["Label"].Annotations.GetValue("KeyValues", ref names);
            Assert.Equal("super3", names.GetValues()[3].ToString());
        }
    }

    [Fact]
    public void LoadCifar100_WrongRecordSize_IsRejected()
    {
        var dir = Path.Combine(_temp.Path, "cifar-100-binary");
        Directory.CreateDirectory(dir);
        // CIFAR-10 records (3073 bytes) in a CIFAR-100 file (3074-byte records).
        DatasetFiles.WriteCifar(Path.Combine(dir, "test.bin"), Enumerable.Range(0, 3).Select(i => (new[] { (byte)1 }, DatasetFiles.CifarPixels(i))).ToArray());
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.LoadCifar100(_temp.Path, DatasetSplit.Test));
        Assert.Contains("3074-byte records", error.Message);
    }
}
